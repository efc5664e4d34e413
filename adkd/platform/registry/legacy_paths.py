"""Module paths that registered models of earlier releases hold, kept importable after the code moved.

A registered pyfunc stores its Python model pickled by reference: ``python_model.pkl`` of a model registered
by adkd before the platform was split by subject (commit f9b3a01) names ``adkd.platform.pyfunc.OnnxAnomalyModel``.
Loading one (``mlflow.pyfunc.load_model``, ``mlflow models serve``) imports that path. The finder below answers
it with the module the class lives in now, so those models keep loading without a module at the old place.
``adkd.platform`` installs it when imported, which unpickling the old path does first.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

# old dotted path -> where that module lives now
MOVED = {"adkd.platform.pyfunc": "adkd.platform.registry.pyfunc"}


class _Alias(importlib.abc.Loader):
    """Loads a moved module's old name as the module at its new place (one module object, two names)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        pass  # already executed under its new name


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds the old paths in ``MOVED``; every other import goes on as usual."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec:
        if fullname not in MOVED:
            return None  # type: ignore[return-value]
        return importlib.util.spec_from_loader(fullname, _Alias(MOVED[fullname]))  # type: ignore[return-value]


def install() -> None:
    """Make the old paths importable (once per process)."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
