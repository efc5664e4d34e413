"""Tiled training and inference at high resolution: tile grids, split and stitch, the tiled eval path.

The bottom of ``adkd.pipelines``: it imports no other pipelines package, so data loading, training,
export and prediction all build on it (``data.tiles``, ``train.tiled``, ``export.tiled``, ``predict.tiled``).
"""
