"""adkd: unsupervised industrial anomaly detection by knowledge distillation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("adkd")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "load", "train"]


def __getattr__(name: str):  # lazy so `import adkd` stays light
    if name in ("load", "train"):
        from adkd import api

        return getattr(api, name)
    raise AttributeError(f"module 'adkd' has no attribute {name!r}")
