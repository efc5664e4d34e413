"""The installed version of adkd (a module of its own, so no module imports the package root)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("adkd")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
