"""Fold databases (and the capture shards inside them) into one, idempotently.

Every record of each source that the destination does not hold yet is added to the
destination's canonical files; nothing is ever removed, and no source is changed.

- Definitions and solutions are added by name; the same name with other content is a
  conflict: it is reported, and the source's records that depend on it are not copied.
- Workloads are the same when definition, axes and input descriptors are, and, for inputs
  read from safetensors blobs, the blob files have the same bytes (uuids and blob paths
  differ between processes that captured the same thing). A new workload's blob is copied
  to the same relative path.
- Traces are the same when definition, solution, workload uuid, hardware, timing regime,
  the content they measured (the digest stamped on the trace; for an unstamped trace, the
  solution's content) and their timestamp are: a trace in another regime, or re-measured,
  is another measurement.
- Before anything is written, the checks registered with `store.hooks` may refuse the merge:
  trust refuses one into a destination trusted by its folder (`fib trust DEST --root`)
  unless every solution and definition it would add is trusted where it comes from
  (`trust.refuse_laundering` names them): merging never makes foreign code trusted.

Each file is written atomically (a temporary file, then a rename) under its lock, in the
order definitions, solutions, blobs, workloads, traces: an interrupted merge leaves the
destination loadable with a subset of the records, and a rerun adds the rest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from fib_runtime.errors import StoreError
from fib_runtime.files import write_atomic
from fib_runtime.schema import SafetensorsInput, Solution, Trace
from fib_runtime.schema.provenance import digest_of, timing_of
from fib_runtime.store import files, layout
from fib_runtime.store.db import TraceDB
from fib_runtime.store.hooks import check_copies

log = logging.getLogger("fib_runtime.store")


@dataclass
class MergeReport:
    """What a merge added, what it found already present, and its conflicts."""

    definitions: int = 0
    solutions: int = 0
    workloads: int = 0
    traces: int = 0
    blobs: int = 0
    duplicates: int = 0
    conflicts: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"added {self.definitions} definitions, {self.solutions} solutions, "
                f"{self.workloads} workloads ({self.blobs} blobs), {self.traces} traces; "
                f"{self.duplicates} already present; {len(self.conflicts)} conflicts")


def merge(sources: list[str | Path], dest: str | Path, *, dry_run: bool = False
          ) -> MergeReport:
    """Add every source database's records that `dest` lacks (see the module docstring)."""
    dest_root = Path(dest).expanduser()
    roots = [Path(s).expanduser() for s in sources]
    for root in roots:
        if not root.is_dir():
            raise StoreError(f"{root}: no such database folder")
        if dest_root.exists() and root.resolve() == dest_root.resolve():
            raise StoreError(f"{root}: a source cannot be the destination")
    if dry_run and not dest_root.exists():
        target = TraceDB(dest_root)  # empty: everything would be added
    else:  # workloads and traces are read one definition at a time (see _Merger.fold)
        target = TraceDB.open(dest_root, create=True, workloads=False, traces=False)
    sources_db = [TraceDB.open(root, workloads=False, traces=False) for root in roots]
    check_copies(target, sources_db)  # trust refuses laundering (store.hooks)
    merger = _Merger(target, dry_run)
    for src in sources_db:
        merger.fold(src)
    return merger.report


def _dumps_sorted(data: object) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _record_digest(solution: Solution | None) -> str:
    """Digest of a solution's whole record, name, author and description included: whether
    two records of one name are the same ("" when the solution is unknown). Not the content
    digest a trace stamps (`provenance.content_digest`), which leaves those out."""
    return "" if solution is None else _digest(_dumps_sorted(solution.to_dict()))


def _light_key(trace: Trace) -> bytes:
    """Definition, axes and descriptors; a blob input counts by its tensor key only."""
    wl = trace.workload
    inputs = {name: ["safetensors", d.tensor_key] if isinstance(d, SafetensorsInput)
              else d.to_dict() for name, d in wl.inputs.items()}
    return _dumps_sorted([trace.definition, wl.axes, inputs])


class _Merger:
    def __init__(self, dest: TraceDB, dry_run: bool) -> None:
        self.dest = dest
        self.dry_run = dry_run
        self.report = MergeReport()
        self._blob_digests: dict[Path, str] = {}
        self._workloads: dict[bytes, list[Trace]] = defaultdict(list)
        self._trace_keys: set[tuple[str, ...]] = set()

    # -- one source -----------------------------------------------------------------------

    def fold(self, src: TraceDB) -> None:
        """Fold one source, one definition at a time: its files and DEST's files of the same
        definition are held, nothing else (memory: the largest definition). A line filed
        under another definition's file is set aside and folded after, against DEST's files
        of its own definition."""
        bad_definitions = self._definitions(src)
        bad_solutions = self._solutions(src, bad_definitions)
        wanted = self.dest.definitions.keys() - bad_definitions
        src_files, dest_files = src.record_files(), self.dest.record_files()
        strays: dict[str, tuple[list[Trace], list[Trace]]] = defaultdict(lambda: ([], []))
        for group in sorted(src_files):
            src.hold(src_files[group])
            for name in sorted(src.held_definitions() & wanted - {group}):
                strays[name][0].extend(src.workloads_for(name))
                strays[name][1].extend(src.traces_for(name))
            if group in wanted:
                self._hold_dest(dest_files.get(group, ()))
                self._workloads_of(src, group, src.workloads_for(group))
                self._traces_of(src, group, src.traces_for(group), bad_solutions)
        src.hold(())
        if strays:  # DEST's files as they are now (this fold may have added some)
            dest_files = self.dest.record_files()
        for name, (workloads, traces) in sorted(strays.items()):
            self._hold_dest(dest_files.get(name, ()))
            self._workloads_of(src, name, workloads)
            self._traces_of(src, name, traces, bad_solutions)
        self._hold_dest(())

    def _hold_dest(self, record_files: Iterable[tuple[Path, bool]]) -> None:
        """Hold DEST's records of these files and index them for the duplicate checks."""
        self.dest.hold(record_files)
        self._workloads.clear()
        self._trace_keys.clear()
        for name in self.dest.held_definitions():
            for trace in self.dest.workloads_for(name):
                self._workloads[_light_key(trace)].append(trace)
            for trace in self.dest.traces_for(name):
                self._trace_keys.add(self._trace_key(trace, self.dest))

    def _conflict(self, src: TraceDB, what: str) -> None:
        message = f"{src.root}: {what}"
        log.warning("merge: %s", message)
        self.report.conflicts.append(message)

    def _definitions(self, src: TraceDB) -> set[str]:
        bad = set()
        for name, definition in sorted(src.definitions.items()):
            have = self.dest.definitions.get(name)
            if have is None:
                if not self.dry_run:
                    self.dest.add_definition(definition, own=False)
                else:
                    self.dest.definitions[name] = definition
                self.report.definitions += 1
            elif have.to_dict() != definition.to_dict():
                bad.add(name)
                self._conflict(src, f"definition '{name}' differs from the destination's; "
                               "its solutions, workloads and traces are not merged")
        return bad

    def _solutions(self, src: TraceDB, bad_definitions: set[str]) -> set[str]:
        bad = set()
        for name, solution in sorted(src.solutions.items()):
            have = self.dest.solutions.get(name)
            if solution.definition in bad_definitions or solution.definition not in \
                    self.dest.definitions:
                bad.add(name)
                if solution.definition not in bad_definitions:
                    self._conflict(src, f"solution '{name}': unknown definition "
                                   f"'{solution.definition}'")
            elif have is None:
                if not self.dry_run:
                    self.dest.add_solution(solution, own=False)
                else:
                    self.dest.solutions[name] = solution
                self.report.solutions += 1
            elif _record_digest(have) != _record_digest(solution):
                bad.add(name)
                self._conflict(src, f"solution '{name}' differs from the destination's; "
                               "its traces are not merged")
        return bad

    # -- workloads ------------------------------------------------------------------------

    def _workloads_of(self, src: TraceDB, name: str, workloads: list[Trace]) -> None:
        new: list[Trace] = []
        for trace in workloads:
            key = _light_key(trace)
            if any(self._same_blobs(src, trace, self.dest, have)
                   for have in self._workloads.get(key, ())):
                self.report.duplicates += 1
                continue
            if not self._copy_blobs(src, trace):
                continue
            self._workloads[key].append(trace)
            new.append(trace)
        self._write(layout.workload_file, name, new)
        self.report.workloads += len(new)

    def _blob_digest(self, db: TraceDB, rel: str) -> str:
        """Content digest of a blob, or its path when it cannot be read."""
        try:
            path = db.blob_path(rel)
        except StoreError:
            return f"outside:{rel}"
        digest = self._blob_digests.get(path)
        if digest is None:
            digest = _digest(path.read_bytes()) if path.is_file() else f"missing:{rel}"
            self._blob_digests[path] = digest
        return digest

    def _same_blobs(self, db_a: TraceDB, a: Trace, db_b: TraceDB, b: Trace) -> bool:
        for name, desc in a.workload.inputs.items():
            if isinstance(desc, SafetensorsInput):
                other = b.workload.inputs[name]
                assert isinstance(other, SafetensorsInput)  # same light key
                if self._blob_digest(db_a, desc.path) != self._blob_digest(db_b, other.path):
                    return False
        return True

    def _copy_blobs(self, src: TraceDB, trace: Trace) -> bool:
        """Copy the workload's blobs that the destination lacks; False on a clash."""
        for desc in {d.path: d for d in trace.workload.inputs.values()
                     if isinstance(d, SafetensorsInput)}.values():
            try:
                source, target = src.blob_path(desc.path), self.dest.blob_path(desc.path)
            except StoreError as exc:
                self._conflict(src, f"workload {trace.workload.uuid}: {exc}")
                return False
            if not source.is_file():
                continue  # missing in the source too: the workload stays unusable, as it was
            if target.is_file():
                if self._blob_digest(src, desc.path) != self._blob_digest(self.dest, desc.path):
                    self._conflict(src, f"blob {desc.path} differs from the destination's; "
                                   f"workload {trace.workload.uuid} is not merged")
                    return False
                continue
            if not self.dry_run:
                _copy_atomic(source, target)
            self.report.blobs += 1
        return True

    # -- traces ---------------------------------------------------------------------------

    def _trace_key(self, trace: Trace, db: TraceDB) -> tuple[str, ...]:
        """What makes a measurement another one (see the module docstring). For a trace
        with no stamp, a database that lacks its solution file counts as holding DEST's."""
        solution = trace.solution or ""
        evaluation = trace.evaluation
        assert evaluation is not None
        measured = digest_of(evaluation)
        if measured is None:
            known = db.solutions.get(solution) or self.dest.solutions.get(solution)
            measured = "content:" + _record_digest(known)
        return (trace.definition, solution, trace.workload.uuid,
                evaluation.environment.hardware, timing_of(evaluation), measured,
                evaluation.timestamp)

    def _traces_of(self, src: TraceDB, name: str, traces: list[Trace],
                   bad_solutions: set[str]) -> None:
        new = []
        for trace in traces:
            if trace.solution in bad_solutions:
                continue
            key = self._trace_key(trace, src)
            if key in self._trace_keys:
                self.report.duplicates += 1
                continue
            self._trace_keys.add(key)
            new.append(trace)
        self._write(layout.trace_file, name, new)
        self.report.traces += len(new)

    # -- writing --------------------------------------------------------------------------

    def _write(self, where: Callable[[Path, str, str], Path], name: str,
               records: list[Trace]) -> None:
        """Rewrite a canonical file atomically with `records` added at its end."""
        if not records or self.dry_run:
            return
        target = where(self.dest.root, self.dest.definitions[name].op_type, name)
        payload = b"".join(orjson.dumps(t.to_dict()) + b"\n" for t in records)
        with files.lock_for(self.dest.root, target):
            old = target.read_bytes() if target.is_file() else b""
            if old and not old.endswith(b"\n"):
                old += b"\n"
            write_atomic(target, old + payload)


def _copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
