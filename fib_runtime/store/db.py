"""TraceDB: load, index and append to a FlashInfer Trace database on disk."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from fib_runtime.errors import FibError, SchemaError, StoreError
from fib_runtime.files import write_atomic
from fib_runtime.hardware import hardware_key
from fib_runtime.schema import Definition, SafetensorsInput, Solution, Trace, writable
from fib_runtime.store import files, layout, shards
from fib_runtime.store.decoding import OTHER_HARDWARE, decode_line
from fib_runtime.store.hooks import announce_own_writes
from fib_runtime.store.per_definition import PerDefinitionReads, collector_off
from fib_runtime.store.reading import LoadProblem, workload_identity

log = logging.getLogger("fib_runtime.store")
_LOGGED_PROBLEMS = 20

R = TypeVar("R")


class TraceDB(PerDefinitionReads):
    """A FlashInfer Trace database rooted at a folder, loaded into memory and indexed.

    Loading is tolerant: a malformed file or line is skipped, logged once and kept in
    `load_errors`. Writes go straight to disk (process-safe) and into the in-memory indexes.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.definitions: dict[str, Definition] = {}
        self.solutions: dict[str, Solution] = {}
        self.solution_files: dict[str, Path] = {}  # name -> the file it was read from
        self._refused_names: dict[str, list[Path]] = {}
        self.load_errors: list[LoadProblem] = []
        self.missing_blobs: set[str] = set()
        self._solutions_by_def: dict[str, list[Solution]] = defaultdict(list)
        self._workloads: dict[str, list[Trace]] = defaultdict(list)
        self._traces: dict[str, list[Trace]] = defaultdict(list)
        self._traces_by_hw: dict[tuple[str, str], list[Trace]] = defaultdict(list)
        self._blob_exists: dict[str, bool] = {}
        self.traces_loaded = False  # whether trace files were read (some keys' or all)
        self.parsed_traces = 0  # trace lines parsed into records (workload lines too)
        self.skipped_traces = 0  # trace lines of other hardware keys, left unparsed

    # -- loading ------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, create: bool = False, strict: bool = False,
             workloads: bool = True, traces: bool = True, hardware: str | None = None
             ) -> TraceDB:
        """Load the database at `path` (creating an empty one when `create`).

        With `strict`, any load problem raises a StoreError listing all of them. A process
        that needs only some records skips the others: dispatch reads no workloads, capture
        no traces (appending works either way). With `hardware` (a hardware key), only the
        traces measured on it are parsed; the others are counted in `skipped_traces`.
        """
        root = Path(path).expanduser()
        if not root.is_dir():
            if root.exists():
                raise StoreError(f"{root}: not a database folder (a file is there)")
            if not create:
                raise StoreError(f"{root}: no such database folder")
            root.mkdir(parents=True, exist_ok=True)
        db = cls(root)
        db._load(workloads=workloads, traces=traces, hardware=hardware)
        if strict and db.load_errors:
            raise StoreError(f"{root}: {len(db.load_errors)} problems:\n"
                             + "\n".join(str(p) for p in db.load_errors))
        return db

    def load_traces(self, *, hardware: str | None = None) -> None:
        """Read the trace files into a database opened with `traces=False` (all of them, or
        only those of one hardware key)."""
        if not self.traces_loaded:
            self._load(workloads=False, traces=True, hardware=hardware, records=False)

    def _load(self, *, workloads: bool, traces: bool, hardware: str | None,
              records: bool = True) -> None:
        with collector_off():
            self._load_all(workloads=workloads, traces=traces, hardware=hardware,
                           records=records)

    def _load_all(self, *, workloads: bool, traces: bool, hardware: str | None,
                  records: bool) -> None:
        """Read the files of each kind asked for; `records`: definitions and solutions."""
        errors_before = len(self.load_errors)
        for path in self._files(layout.DEFINITIONS, ".json") if records else ():
            self._load_json(path, Definition.from_dict, self._index_definition)
        for path in self._files(layout.SOLUTIONS, ".json") if records else ():
            self._load_json(path, Solution.from_dict,
                            lambda solution, path=path: self._index_solution(solution, path))
        for path in self._files(layout.WORKLOADS, ".jsonl") if workloads else ():
            self._load_jsonl(path, workloads=True, hardware=None)
        for path in self._files(layout.TRACES, ".jsonl") if traces else ():
            self._load_jsonl(path, workloads=False, hardware=hardware)
        self.traces_loaded = self.traces_loaded or traces
        self._report_missing_blobs()
        new = self.load_errors[errors_before:]
        for problem in new[:_LOGGED_PROBLEMS]:
            log.warning("skipped %s", problem)
        if len(new) > _LOGGED_PROBLEMS:
            log.warning("skipped %d more records; run `fib validate %s` for all",
                        len(new) - _LOGGED_PROBLEMS, self.root)

    def _files(self, folder: str, suffix: str) -> list[Path]:
        """The record files of a folder; a link that resolves outside the root is a load
        problem, never read (trusting a folder must not trust what it links to)."""
        base = self.root / folder
        found = sorted(base.rglob(f"*{suffix}")) if base.is_dir() else []
        inside = str(self.root.resolve()) + os.sep
        kept = []
        for path in found:
            if path.is_symlink() and not path.exists():
                self.load_errors.append(LoadProblem(self._rel(path), None, None,
                                                    "a dangling symbolic link (skipped)"))
            elif not os.path.realpath(path).startswith(inside):
                self.load_errors.append(LoadProblem(self._rel(path), None, None, (
                    "a link that resolves outside the database root (skipped)")))
            elif path.is_file():
                kept.append(path)
        return kept

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def _problem(self, path: Path, line: int | None, exc: Exception) -> None:
        field = exc.field if isinstance(exc, SchemaError) else None
        reason = exc.reason if isinstance(exc, SchemaError) else str(exc)
        self.load_errors.append(LoadProblem(self._rel(path), line, field, reason))

    def _load_json(self, path: Path, parse: Callable[[Any], R], index: Callable[[R], None]
                   ) -> None:
        try:
            index(parse(orjson.loads(path.read_bytes())))
        except (orjson.JSONDecodeError, FibError, OSError) as exc:
            self._problem(path, None, exc)
        except (RecursionError, MemoryError):  # a hostile record; the rest still loads
            self._problem(path, None, SchemaError("nested too deeply to load"))

    def _load_jsonl(self, path: Path, *, workloads: bool, hardware: str | None,
                    index: Callable[[Trace], None] | None = None) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            self._problem(path, None, exc)
            return
        index = index or self._index_trace
        keys: dict[str, str] = {}
        parsed = skipped = 0
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                trace = decode_line(line, hardware, keys)
                if trace is OTHER_HARDWARE:
                    skipped += 1
                    continue
                parsed += 1
            except (orjson.JSONDecodeError, FibError) as exc:
                parsed += 1
                self._problem(path, number, exc)
                continue
            except (RecursionError, MemoryError):
                self._problem(path, number, SchemaError("nested too deeply to load"))
                continue
            if workloads and not trace.is_workload:
                self._problem(path, number, SchemaError(
                    "a workload line must have null solution and evaluation", field="solution"))
                continue
            index(trace)
        self.parsed_traces += parsed
        self.skipped_traces += skipped

    def _index_definition(self, definition: Definition) -> None:
        layout.check_definition(definition)
        if definition.name in self.definitions:
            raise StoreError(f"duplicate definition name '{definition.name}'")
        self.definitions[definition.name] = definition

    def _index_solution(self, solution: Solution, path: Path) -> None:
        """Index a loaded solution. Two files with one name: neither is used (which one the
        name and its traces belong to cannot be told), and each is a load problem."""
        layout.check_solution(solution)
        name = solution.name
        group = self._refused_names.get(name)
        if group is None and name in self.solutions:
            first = self.solution_files.pop(name)
            old = self.solutions.pop(name)
            self._solutions_by_def[old.definition].remove(old)
            group = self._refused_names[name] = [first]
            self.load_errors.append(LoadProblem(self._rel(first), None, "name", (
                f"duplicate solution name '{name}', also in {self._rel(path)}; neither is "
                "used")))
        if group is not None:
            others = ", ".join(self._rel(p) for p in group)
            group.append(path)
            raise SchemaError(f"duplicate solution name '{name}', also in {others}; neither "
                              "is used", field="name")
        self.solutions[name] = solution
        self.solution_files[name] = path
        self._solutions_by_def[solution.definition].append(solution)

    def _index_trace(self, trace: Trace) -> None:
        if trace.evaluation is None:
            self._workloads[trace.definition].append(trace)
            for desc in trace.workload.inputs.values():
                if type(desc) is SafetensorsInput:
                    self._note_blob(desc.path)
            return
        self._traces[trace.definition].append(trace)
        key = hardware_key(trace.evaluation.environment.hardware)
        self._traces_by_hw[(trace.definition, key)].append(trace)

    def _note_blob(self, rel: str) -> None:
        exists = self._blob_exists.get(rel)
        if exists is None:
            try:
                exists = files.inside(self.root, rel).is_file()
            except StoreError:
                exists = False
            self._blob_exists[rel] = exists
        if not exists:
            self.missing_blobs.add(rel)

    def _report_missing_blobs(self) -> None:
        if self.missing_blobs:
            example = min(self.missing_blobs)
            log.warning("%s: %d blob files referenced by workloads are missing (e.g. %s); "
                        "those workloads cannot be materialised", self.root,
                        len(self.missing_blobs), example)

    # -- queries ------------------------------------------------------------------------

    def solutions_for(self, definition: str) -> list[Solution]:
        return list(self._solutions_by_def.get(definition, ()))

    def workloads_for(self, definition: str) -> list[Trace]:
        """Every workload line of a definition, as stored (duplicates included)."""
        return list(self._workloads.get(definition, ()))

    def distinct_workloads(self, definition: str) -> list[Trace]:
        """Workloads of a definition with duplicates removed (same axes and inputs).

        Many capturing processes may record the same workload; the first one seen is kept.
        """
        seen: set[bytes] = set()
        distinct = []
        for trace in self._workloads.get(definition, ()):
            key = workload_identity(trace)
            if key not in seen:
                seen.add(key)
                distinct.append(trace)
        return distinct

    def traces_for(self, definition: str, hardware: str | None = None) -> list[Trace]:
        """Benchmark traces of a definition, optionally only those of one hardware key."""
        if hardware is None:
            return list(self._traces.get(definition, ()))
        return list(self._traces_by_hw.get((definition, hardware), ()))

    def hardware_keys(self, definition: str) -> dict[str, int]:
        """Trace counts per hardware key for a definition."""
        return {key: len(traces) for (name, key), traces in self._traces_by_hw.items()
                if name == definition}

    def fingerprint(self) -> str:
        """Digest of what dispatch decisions depend on (see `decisions_fingerprint`)."""
        return files.decisions_fingerprint(self.root)

    # -- writing ------------------------------------------------------------------------

    def add_definition(self, definition: Definition, *, replace: bool = False,
                       own: bool = True) -> Path:
        """Write a definition file atomically and index it; with `own` (this process wrote
        it, not a copy) it is announced as our own (`store.hooks`: trust remembers it)."""
        if definition.name in self.definitions and not replace:
            raise StoreError(f"definition '{definition.name}' already exists in {self.root}")
        target = self._inside(layout.definition_file(self.root, definition.op_type,
                                                     definition.name))
        data = self._checked(writable.check_definition, definition, target)
        write_atomic(target, orjson.dumps(data, option=orjson.OPT_INDENT_2))
        self.definitions[definition.name] = definition
        if own:
            announce_own_writes(definitions=[definition])
        return target

    def add_solution(self, solution: Solution, *, replace: bool = False,
                     own: bool = True) -> Path:
        """Write a solution file atomically and index it; with `own` (this process wrote it,
        not a copy from another database) it is announced as our own (trust remembers it)."""
        definition = self._definition(solution.definition)
        if solution.name in self.solutions and not replace:
            raise StoreError(f"solution '{solution.name}' already exists in {self.root}")
        target = self._inside(layout.solution_file(self.root, solution.author,
                                                   definition.op_type, solution.definition,
                                                   solution.name))
        data = self._checked(writable.check_solution, solution, target)
        write_atomic(target, orjson.dumps(data, option=orjson.OPT_INDENT_2))
        old = self.solutions.get(solution.name)
        if old is not None:
            self._solutions_by_def[old.definition].remove(old)
        old_file = self.solution_files.get(solution.name)
        if old_file is not None and old_file != target:
            old_file.unlink(missing_ok=True)  # e.g. another author: one file per name
        self.solutions[solution.name] = solution
        self.solution_files[solution.name] = target
        self._solutions_by_def[solution.definition].append(solution)
        if own:
            announce_own_writes(solutions=[solution])
        return target

    def append_workloads(self, workloads: Iterable[Trace], *, shard: str | None = None) -> int:
        """Append workload records (solution and evaluation null); process-safe.

        With `shard`, to this process's own shard files, without a lock (see store.shards).
        """
        if shard is None:
            return self._append(workloads, layout.workload_file, want_workloads=True)
        return self._append(workloads, lambda root, op, name: shards.shard_file(
            root, op, name, shard), want_workloads=True, lock=False)

    def append_traces(self, traces: Iterable[Trace]) -> int:
        """Append benchmark traces; process-safe."""
        return self._append(traces, layout.trace_file, want_workloads=False)

    def _append(self, records: Iterable[Trace], where: Callable[[Path, str, str], Path], *,
                want_workloads: bool, lock: bool = True) -> int:
        by_file: dict[Path, list[tuple[Trace, dict[str, Any]]]] = defaultdict(list)
        targets: dict[str, Path] = {}
        for trace in records:
            if trace.is_workload != want_workloads:
                kind = "workload" if want_workloads else "benchmark trace"
                raise StoreError(f"not a {kind}: definition '{trace.definition}', "
                                 f"workload {trace.workload.uuid}")
            target = targets.get(trace.definition)
            if target is None:
                op_type = self._definition(trace.definition).op_type
                target = self._inside(where(self.root, op_type, trace.definition))
                targets[trace.definition] = target
            by_file[target].append((trace, self._checked(writable.check_trace, trace, target)))
        written = 0
        for target, batch in by_file.items():
            written += files.append_records(self.root, target, (data for _, data in batch),
                                            lock=lock)
            for trace, _ in batch:
                self._index_trace(trace)
        return written

    def _checked(self, check: Callable[[R], dict[str, Any]], record: R, target: Path
                 ) -> dict[str, Any]:
        """The record as written, unless a reader (ours or flashinfer-bench's) would refuse it."""
        try:
            return check(record)
        except SchemaError as exc:
            raise exc.located(self._rel(target)) from None

    def _inside(self, target: Path) -> Path:
        """`target` unless it resolves outside the root (a symlink inside the database)."""
        files.inside(self.root, str(target.relative_to(self.root)))
        return target

    def _definition(self, name: str) -> Definition:
        try:
            return self.definitions[name]
        except KeyError:
            raise StoreError(f"unknown definition '{name}' in {self.root}") from None

    # -- blobs --------------------------------------------------------------------------

    def blob_path(self, rel: str) -> Path:
        """Absolute path of a blob referenced from data (must stay inside the root)."""
        return files.inside(self.root, rel)

    def save_tensors(self, rel: str, tensors: dict[str, Any]) -> int:
        """Save tensors to a safetensors blob (atomically); returns its size in bytes."""
        from safetensors.torch import save

        data = save({k: v.contiguous() for k, v in tensors.items()})
        write_atomic(self.blob_path(rel), data)
        self._blob_exists[rel] = True
        self.missing_blobs.discard(rel)
        return len(data)

    def load_tensor(self, desc: SafetensorsInput, *, device: str = "cpu") -> Any:
        """Read one tensor of a blob; a clear StoreError names the file when it is missing."""
        from safetensors import safe_open

        path = self.blob_path(desc.path)
        if not path.is_file():
            raise StoreError(f"blob file {desc.path} is missing from {self.root} "
                             "(datasets are often cloned without their blobs)")
        with safe_open(str(path), framework="pt", device=device) as handle:
            if desc.tensor_key not in handle.keys():  # noqa: SIM118 - safe_open has no __contains__
                raise StoreError(f"{desc.path}: no tensor '{desc.tensor_key}'")
            return handle.get_tensor(desc.tensor_key)

