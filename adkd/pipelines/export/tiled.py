"""ONNX export of a tiled model: the tile graph, its tiling in the metadata, and parity on whole images.

The graph scores tiles exactly as an untiled model's graph scores images (uint8 NHWC tiles in; tile maps,
scores and normalised scores out); for a per-position model it runs position ``i % P`` on the ``i``-th tile,
so a batch holds the P tiles of whole images in grid order. The ``tiling`` metadata
(``adkd.pipelines.tiling.spec.TilingSpec``) tells predictors how to split whole images and stitch the maps
(``adkd.pipelines.predict.tiled.TiledPredictor``), so the artifact still takes a full image and returns
its full map in every runtime.

Two checks guard the file: the tile graph against PyTorch on the tiles of real images (as every export),
and the stitched map of whole images, ONNX Runtime's tiles stitched by the predictor's code, against
PyTorch's own tiled eval path (``TiledModel``); either failing leaves no file behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adkd.errors import ConfigError
from adkd.pipelines.export.onnx_export import (
    INPUT_NAME,
    MAP_TOLERANCE,
    OPSET,
    OUTPUT_NAMES,
    SCORE_TOLERANCE,
    ExportError,
    ExportGraph,
    _ort_session,
    _thresholds_dict,
    _torch_export,
    meta_props,
    set_metadata,
    verify_onnx,
)
from adkd.pipelines.tiling.grid import split
from adkd.pipelines.tiling.model import TiledModel
from adkd.pipelines.tiling.spec import TilingSpec, score_tiled

N_VERIFY = 2  # whole images checked end to end (all their tiles go through the tile check)


def _noise_images(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 images [n, height, width, 3] (low-frequency patterns plus noise)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    noisy = (smooth * 200 + torch.rand(n, 3, height, width, generator=gen) * 55).clamp(0, 255)
    return noisy.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def stitched_parity(path: Path, model: nn.Module, spec: TilingSpec, images: np.ndarray) -> dict[str, float]:
    """ONNX Runtime's stitched maps and scores of whole ``images`` against PyTorch's ``TiledModel``."""
    from adkd.models.preprocess import normalize

    session = _ort_session(path)

    def run(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(session.run(list(OUTPUT_NAMES), {INPUT_NAME: tiles}))  # type: ignore[return-value]

    ort_maps, ort_scores = score_tiled(run, images, spec, tiles_per_call=4 * (spec.positions or 1))
    tiled = TiledModel(model, spec.tile, spec.stride, spec.blend).eval()
    with torch.inference_mode():
        ref_map, ref_score = tiled(normalize(torch.from_numpy(images).permute(0, 3, 1, 2)))
    ref_maps, ref_scores = ref_map[:, 0].numpy(), ref_score.numpy()
    map_range = float(ref_maps.max() - ref_maps.min())
    map_tol = MAP_TOLERANCE * max(map_range, 1e-12)
    return {
        "n_images": len(images),
        "size": f"{images.shape[2]}x{images.shape[1]}",
        "max_map_diff": float(np.abs(ort_maps - ref_maps).max()),
        "max_score_diff": float(np.abs(ort_scores - ref_scores).max()),
        "map_tolerance": map_tol,
        "score_tolerance": max(SCORE_TOLERANCE * max(1.0, float(np.abs(ref_scores).max())), map_tol),
    }


def export_tiled(
    model: nn.Module,
    out_path: str | Path,
    spec: TilingSpec,
    thresholds: Any,
    meta: dict[str, Any] | None = None,
    *,
    images: np.ndarray | None = None,
    source: str = "given images",
    opset: int = OPSET,
) -> Path:
    """Write the tile graph of ``model`` to ``out_path`` with ``spec`` in its metadata; both checks must pass.

    ``images``: whole uint8 [N, H, W, 3] images of the trained size (default: synthetic ones of two tiles' side,
    or of the per-position size).
    """
    from adkd.version import __version__

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    graph = ExportGraph(model, spec.tile, thresholds).cpu().eval()
    if images is None:
        h, w = spec.fixed_size or (2 * spec.tile, 2 * spec.tile)
        images, source = _noise_images(N_VERIFY, h, w), "synthetic images"
    images = np.ascontiguousarray(images[:N_VERIFY])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ConfigError(f"verification images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    tiles = torch.from_numpy(split(images, spec.grid(images.shape[1], images.shape[2]), "nhwc"))
    group = (spec.positions or 1) if spec.per_position else 1
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    try:
        try:
            # Two images' tiles (two per-position groups) so the batch axis stays dynamic.
            dummy = tiles[: 2 * group] if len(tiles) >= 2 * group else tiles.repeat(2, 1, 1, 1)
            _torch_export(graph, dummy.contiguous(), tmp, opset)
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed for {out_path.name}: {type(exc).__name__}: {exc}") from exc
        props = {
            "adkd_version": __version__,
            "torch_version": torch.__version__,
            "image_size": spec.tile,
            "eval_size": spec.tile,
            "input_format": "uint8 RGB NHWC tiles [batch, tile, tile, 3]; whole images: see tiling",
            "outputs": list(OUTPUT_NAMES),
            "thresholds": _thresholds_dict(thresholds),
            "tiling": spec.to_meta(),
            **(meta or {}),
        }
        set_metadata(tmp, meta_props(props))
        report = verify_onnx(tmp, graph, tiles, source=f"tiles of {source}", batch_size=4 * group)
        if not report.ok:
            raise ExportError(
                f"ONNX export of {out_path.name} does not match PyTorch on tiles: max map diff "
                f"{report.max_map_diff:.3g} (allowed {report.map_tolerance:.3g}), max score diff "
                f"{report.max_score_diff:.3g} (allowed {report.score_tolerance:.3g}); the run fails"
            )
        stitched = stitched_parity(tmp, model.cpu().eval(), spec, images)
        stitched_ok = stitched["max_map_diff"] <= stitched["map_tolerance"]
        if not (stitched_ok and stitched["max_score_diff"] <= stitched["score_tolerance"]):
            raise ExportError(
                f"ONNX export of {out_path.name}: stitched maps of whole images differ from PyTorch's tiled path "
                f"(max map diff {stitched['max_map_diff']:.3g}, allowed {stitched['map_tolerance']:.3g}; max score "
                f"diff {stitched['max_score_diff']:.3g}, allowed {stitched['score_tolerance']:.3g}); the run fails"
            )
        set_metadata(
            tmp,
            {
                "parity": json.dumps(report.to_dict(), sort_keys=True),
                "stitched_parity": json.dumps({**stitched, "source": source}, sort_keys=True),
            },
        )
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path
