"""Turn a Solution (or a definition's reference) into a Python callable, once.

Sources are written once into a content-addressed folder of the build cache
($FIB_CACHE_PATH/builds). A cache that cannot be written (a full disk, a read-only mount,
a path that is a file) does not stop serving: the sources go to a private temporary folder
of this process instead, and the Built says so (`note`). Anything else that stops a build
is a BuildError: the solution is unavailable here, and its calls fall back.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from fib_runtime.build.isolation import import_entry
from fib_runtime.errors import BuildError
from fib_runtime.paths import cache_path
from fib_runtime.schema import Definition, Solution
from fib_runtime.schema.provenance import content_digest

log = logging.getLogger("fib_runtime.build")
_NAME_CHARS = 48  # of the solution's name in its module and folder name (a part <= 255 bytes)


@dataclass(frozen=True)
class Built:
    """A solution's entry point, callable in the solution's own convention. `note` says
    why it was built outside the build cache, when it was; `targets` and `language` are its
    spec's (where it may run); `original`: the engine's own function, vouched for by a live
    call site (nothing was imported)."""

    name: str
    fn: Callable[..., Any]
    dps: bool
    note: str | None = None
    targets: tuple[str, ...] = ()
    language: str = "python"
    original: bool = False
    any_layout: bool = False  # its module says FIB_ANY_LAYOUT = True (see dispatch.contract)


class BuildCache:
    """Each solution built once, by name and content digest (sources and spec: a changed
    entry point or calling convention is built again); a failure is kept too (unavailable
    here). `get` never raises."""

    def __init__(self) -> None:
        self._built: dict[tuple[str, str], Built | BuildError] = {}
        self._lock = threading.Lock()

    def get(self, solution: Solution) -> Built | BuildError:
        key = (solution.name, content_digest(solution))  # its spec counts: entry point, DPS
        built = self._built.get(key)
        if built is None:
            with self._lock:
                built = self._built.get(key)
                if built is None:
                    try:
                        built = build_solution(solution)
                    except Exception as exc:
                        built = exc if isinstance(exc, BuildError) else BuildError(
                            f"{solution.name}: {type(exc).__name__}: {exc}")
                        log.warning("solution %s is unavailable here: %s", solution.name,
                                    str(built).splitlines()[0])
                    self._built[key] = built
        return built


def build_solution(solution: Solution, cache: Path | None = None) -> Built:
    """Build a solution on this machine with its language's builder (`LANGUAGES`);
    BuildError (with the log) if it cannot be."""
    language = LANGUAGES.get(solution.spec.language.lower())
    if language is None:
        raise BuildError(f"{solution.name}: language '{solution.spec.language}' cannot be "
                         f"built here ({' and '.join(sorted(LANGUAGES))} can)")
    return language.build(solution, cache or cache_path())


def import_entry_point(solution: Solution, cache: Path) -> Built:
    """The builder of Python-hosted languages: write the sources, import the entry file and
    take its entry function (Triton kernels compile on their first launch)."""
    folder, note = _source_folder(solution, cache)
    try:
        module = import_entry(folder / solution.spec.entry_file, _module_name(solution))
        fn = getattr(module, solution.spec.entry_function)
    except BaseException as exc:  # a solution's import may raise anything, even SystemExit
        raise BuildError(f"{solution.name}: {type(exc).__name__}: {exc}\n"
                         f"{traceback.format_exc()}") from exc
    if not callable(fn):
        raise BuildError(f"{solution.name}: entry point {solution.spec.entry_point} "
                         "is not callable")
    return Built(solution.name, fn, solution.spec.dps, note, solution.spec.target_hardware,
                 solution.spec.language.lower(),
                 any_layout=getattr(module, "FIB_ANY_LAYOUT", False) is True)


def _never() -> bool:
    return False


def _triton_interpreter() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@dataclass(frozen=True)
class Language:
    """How solutions in one language are built here, and whether they also run on CPU
    tensors when their targets name no CPU (e.g. in a kernel interpreter)."""

    build: Callable[[Solution, Path], Built]
    on_cpu: Callable[[], bool] = _never


# Solution builders by language (`spec.language`, lower case): a new language is one entry.
LANGUAGES: dict[str, Language] = {
    "python": Language(import_entry_point),
    "triton": Language(import_entry_point, on_cpu=_triton_interpreter),
}


def runs_on_cpu_anyway(language: str) -> bool:
    """Whether a solution in `language` runs on CPU tensors whatever its targets say."""
    entry = LANGUAGES.get(language)
    return entry is not None and entry.on_cpu()


def build_reference(definition: Definition) -> Callable[..., Any]:
    """The definition's reference `run` (value-returning)."""
    namespace: dict[str, Any] = {"__name__": f"fib_reference_{definition.name}"}
    try:
        exec(compile(definition.reference, f"<reference {definition.name}>", "exec"), namespace)
    except Exception as exc:
        raise BuildError(f"{definition.name}: reference fails to load: {exc}") from exc
    return namespace["run"]


def _import_key(solution: Solution) -> str:
    """A short digest of what is imported (name, language, sources): it names the module and
    its build folder, shared by solutions that differ only in their spec."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(solution.name.encode() + b"\0" + solution.spec.language.encode())
    for source in solution.sources:
        digest.update(source.path.encode() + b"\0" + source.content.encode() + b"\0")
    return digest.hexdigest()


def _module_name(solution: Solution) -> str:
    """Unique per name and content; also the name of its build folder."""
    safe = "".join(c if c.isascii() and c.isalnum() else "_" for c in solution.name)
    return f"fib_solution_{safe[:_NAME_CHARS]}_{_import_key(solution)}"


def _source_folder(solution: Solution, cache: Path) -> tuple[Path, str | None]:
    """The folder holding the solution's sources, and why it is not the cache's, if not."""
    name = _module_name(solution)
    try:
        return _write_sources(cache / "builds" / name, solution), None
    except OSError as exc:
        note = f"build cache {cache} is not writable ({type(exc).__name__}: {exc})"
    try:
        folder = _write_sources(_private_root() / name, solution)
    except OSError as exc:
        raise BuildError(f"{solution.name}: its sources cannot be written: {note}; "
                         f"nor in a private folder: {type(exc).__name__}: {exc}") from exc
    log.warning("%s: %s; built in a private temporary folder", solution.name, note)
    return folder, note


def _write_sources(folder: Path, solution: Solution) -> Path:
    """Write the sources once, under the folder's lock; the `.complete` marker, written
    last, says they are all there. Files are written in place: a temporary name beside a
    source name of 250 bytes would pass the 255-byte limit."""
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not done.exists():
            for source in solution.sources:
                _write_file(folder / source.path, source.content.encode())
            _write_file(done, b"")
    return folder


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


_private: list[Path] = []
_private_lock = threading.Lock()


def _private_root() -> Path:
    """This process's own build folder (removed at exit), for when the cache is unusable."""
    with _private_lock:
        if not _private:
            _private.append(Path(tempfile.mkdtemp(prefix="fib-builds-")))
            atexit.register(shutil.rmtree, _private[0], ignore_errors=True)
        return _private[0]
