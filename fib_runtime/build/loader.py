"""Turn a Solution (or a definition's reference) into a Python callable, once."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from filelock import FileLock

from fib_runtime.errors import BuildError
from fib_runtime.paths import cache_path
from fib_runtime.schema import Definition, Solution
from fib_runtime.store.files import write_atomic

log = logging.getLogger("fib_runtime.build")
PYTHON_LANGUAGES = frozenset({"python", "triton"})


@dataclass(frozen=True)
class Built:
    """A solution's entry point, callable in the solution's own convention."""

    name: str
    fn: Callable[..., Any]
    dps: bool


class BuildCache:
    """Each solution built once, by name; a failure is kept too (unavailable here)."""

    def __init__(self) -> None:
        self._built: dict[str, Built | BuildError] = {}
        self._lock = threading.Lock()

    def get(self, solution: Solution) -> Built | BuildError:
        built = self._built.get(solution.name)
        if built is None:
            with self._lock:
                built = self._built.get(solution.name)
                if built is None:
                    try:
                        built = build_solution(solution)
                    except BuildError as exc:
                        built = exc
                        log.warning("solution %s is unavailable here: %s", solution.name,
                                    str(exc).splitlines()[0])
                    self._built[solution.name] = built
        return built


def build_solution(solution: Solution, cache: Path | None = None) -> Built:
    """Build a solution on this machine; BuildError (with the log) if it cannot be."""
    if solution.spec.language.lower() not in PYTHON_LANGUAGES:
        raise BuildError(f"{solution.name}: language '{solution.spec.language}' cannot be "
                         "built here (python and triton can)")
    folder = _source_folder(solution, cache or cache_path())
    try:
        module = _import_file(folder / solution.spec.entry_file, _module_name(solution))
        fn = getattr(module, solution.spec.entry_function)
    except BaseException as exc:  # a solution's import may raise anything, even SystemExit
        raise BuildError(f"{solution.name}: {type(exc).__name__}: {exc}\n"
                         f"{traceback.format_exc()}") from exc
    if not callable(fn):
        raise BuildError(f"{solution.name}: entry point {solution.spec.entry_point} "
                         "is not callable")
    return Built(solution.name, fn, solution.spec.dps)


def build_reference(definition: Definition) -> Callable[..., Any]:
    """The definition's reference `run` (value-returning)."""
    namespace: dict[str, Any] = {"__name__": f"fib_reference_{definition.name}"}
    try:
        exec(compile(definition.reference, f"<reference {definition.name}>", "exec"), namespace)
    except Exception as exc:
        raise BuildError(f"{definition.name}: reference fails to load: {exc}") from exc
    return namespace["run"]


def _digest(solution: Solution) -> str:
    digest = hashlib.blake2b(digest_size=8)
    digest.update(solution.spec.language.encode())
    for source in solution.sources:
        digest.update(source.path.encode() + b"\0" + source.content.encode() + b"\0")
    return digest.hexdigest()


def _module_name(solution: Solution) -> str:
    safe = "".join(c if c.isalnum() else "_" for c in solution.name)
    return f"fib_solution_{safe}_{_digest(solution)}"


def _source_folder(solution: Solution, cache: Path) -> Path:
    """Write the sources once into a content-addressed folder of the build cache."""
    folder = cache / "builds" / _module_name(solution)
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not done.exists():
            for source in solution.sources:
                write_atomic(folder / source.path, source.content.encode())
            done.touch()
    return folder


def _import_file(path: Path, name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BuildError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # sibling source files may import each other
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    sys.modules[name] = module
    return module
