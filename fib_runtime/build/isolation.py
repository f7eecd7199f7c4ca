"""Import a solution's entry file so that the modules it ships stay its own.

Solutions import their sibling files either absolutely (`from helper import f`, the
FlashInfer Trace convention: the entry's folder is on `sys.path` while it loads) or
relatively (`from .helper import f`). Two solutions that both ship a `helper.py` must each
get their own, so a solution is imported like this, one at a time per process:

- its entry file becomes `<package>.<stem>`, where `<package>` is a unique name per
  solution content whose `__path__` is the entry's folder (relative imports land there);
- every top-level name the folder provides (`helper.py`, a `pkg/` folder) is looked up
  afresh: an entry of that name already in `sys.modules` (another solution's, the
  application's own `helper`) is hidden while the solution loads, then restored. Names of
  the standard library and of the runtime's own stack are never hidden: a solution cannot
  shadow `os` or `torch` for the rest of the process;
- afterwards the modules the solution loaded under those names are removed from
  `sys.modules` again (its own code keeps them through the names it bound), so nothing it
  shipped stays visible to the next solution or to the application.

A solution that imports a sibling lazily, inside a function at call time, finds it gone;
that call fails like any other solution error (it falls back and is counted).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

# sys.path and sys.modules are process-wide: one solution import at a time.
_lock = threading.RLock()
_PROTECTED = frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names) | {
    "fib_runtime", "torch", "triton", "numpy", "filelock", "orjson", "safetensors"}


def import_entry(entry: Path, package: str) -> ModuleType:
    """Import the solution file `entry` as `<package>.<stem>`, isolated (see the module)."""
    name = f"{package}.{entry.stem}"
    with _lock:
        module = sys.modules.get(name)
        if module is not None:
            return module
        folder = str(entry.parent)
        spec = importlib.util.spec_from_file_location(name, entry)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {entry}")
        _ensure_package(package, folder)
        own = own_names(entry.parent)
        module = importlib.util.module_from_spec(spec)
        before = {k: v for k, v in sys.modules.items() if _top(k) in own}
        hidden = {k: sys.modules.pop(k) for k in list(before) if _top(k) not in _PROTECTED}
        sys.modules[name] = module  # e.g. dataclasses look their module up while it loads
        sys.path.insert(0, folder)
        importlib.invalidate_caches()  # the folder may have been written a moment ago
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        finally:
            sys.path.remove(folder)
            for key in [k for k in sys.modules if _top(k) in own]:
                if sys.modules[key] is not before.get(key):
                    del sys.modules[key]
            sys.modules.update(hidden)
        return module


def own_names(folder: Path) -> set[str]:
    """Top-level module names a folder provides: its `*.py` files and its sub-folders."""
    names = set()
    for path in folder.iterdir():
        if path.name.startswith((".", "__pycache__")):
            continue
        if path.is_dir():
            names.add(path.name)
        elif path.suffix == ".py":
            names.add(path.stem)
    return names


def _top(module: str) -> str:
    return module.partition(".")[0]


def _ensure_package(package: str, folder: str) -> None:
    """A namespace-like package whose only folder is the solution's (relative imports)."""
    module = sys.modules.get(package)
    if module is None:
        module = ModuleType(package, "fib-runtime: the modules of one solution")
        module.__package__ = package
        sys.modules[package] = module
    module.__path__ = [folder]  # where its sources are now (the cache, or a private folder)
