"""adkd: unsupervised industrial anomaly detection by knowledge distillation."""

from adkd.version import __version__

__all__ = ["__version__", "load", "train"]


def __getattr__(name: str):  # lazy so `import adkd` stays light
    if name in ("load", "train"):
        from adkd import api

        return getattr(api, name)
    raise AttributeError(f"module 'adkd' has no attribute {name!r}")
