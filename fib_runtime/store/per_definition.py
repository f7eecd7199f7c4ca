"""The offline tools' reads of a TraceDB: one file or one definition at a time, so that
their memory is bounded by the largest definition, not the database."""

from __future__ import annotations

import contextlib
import gc
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from fib_runtime.schema import Definition, Trace
from fib_runtime.store import layout, shards


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """Loading creates millions of small objects and no cycles: the cyclic collector would
    only rescan them over and over."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class PerDefinitionReads:
    """TraceDB's per-file and per-definition reads (a part of TraceDB, kept apart)."""

    root: Path
    definitions: dict[str, Definition]
    traces_loaded: bool
    _workloads: dict[str, list[Trace]]
    _traces: dict[str, list[Trace]]
    _traces_by_hw: dict[tuple[str, str], list[Trace]]
    _files: Callable[[str, str], list[Path]]
    _load_jsonl: Callable[..., None]
    _report_missing_blobs: Callable[[], None]
    traces_for: Callable[..., list[Trace]]

    def stream(self, kind: str) -> Iterator[list[Trace]]:
        """The records of each `workloads` or `traces` file, one file at a time, not indexed:
        what an offline tool that only counts needs, in memory bounded by one file (load
        problems are added to `load_errors` as each file is read)."""
        folder = {"workloads": layout.WORKLOADS, "traces": layout.TRACES}[kind]
        for path in self._files(folder, ".jsonl"):
            records: list[Trace] = []
            self._load_jsonl(path, workloads=kind == "workloads", hardware=None,
                             index=records.append)
            yield records

    def each_definition(self) -> Iterator[str]:
        """Each definition's workloads and traces in turn, for an offline tool that reads
        one definition at a time: memory bounded by the largest definition, not the database.

        On a database opened with `workloads=False, traces=False`, the files named for one
        definition (`<name>.jsonl` and its shards, under workloads/ and traces/) are loaded
        into the indexes, the name is yielded, and they are dropped before the next; load
        problems add up in `load_errors`. A line naming another definition than its file is
        indexed under its own name, in its file's turn. On a database already loaded, every
        name is yielded with everything in place."""
        if self.traces_loaded:
            yield from sorted(self.definitions.keys() | self._workloads.keys()
                              | self._traces.keys())
            return
        groups = self.record_files()
        for name in sorted(groups.keys() | self.definitions.keys()):
            self.hold(groups.get(name, ()))
            yield name
        self._forget_records()
        self._report_missing_blobs()

    def record_files(self) -> dict[str, list[tuple[Path, bool]]]:
        """The workload and trace files named for each definition (`<name>.jsonl` and its
        shards; a file named for no known definition under its stem), as (path, whether it
        holds workloads)."""
        groups: dict[str, list[tuple[Path, bool]]] = defaultdict(list)
        for folder, is_workload in ((layout.WORKLOADS, True), (layout.TRACES, False)):
            for path in self._files(folder, ".jsonl"):
                groups[shards.definition_of_file(path, self.definitions)].append(
                    (path, is_workload))
        return groups

    def hold(self, record_files: Iterable[tuple[Path, bool]]) -> None:
        """Hold only the records of these files (`record_files`' values) in the indexes."""
        self._forget_records()
        with collector_off():
            for path, is_workload in record_files:
                self._load_jsonl(path, workloads=is_workload, hardware=None)

    def stored_traces(self, definition: str, hardware: str,
                      record_files: dict[str, list[tuple[Path, bool]]] | None = None
                      ) -> list[Trace]:
        """A definition's traces of one hardware key: those loaded, or, on a database opened
        without traces, read from the trace files named for it (`record_files()`, computed
        here unless given) and not kept: memory bounded by one definition."""
        if self.traces_loaded:
            return self.traces_for(definition, hardware)
        found: list[Trace] = []
        groups = self.record_files() if record_files is None else record_files
        for path, is_workload in groups.get(definition, ()):
            if not is_workload:
                with collector_off():
                    self._load_jsonl(path, workloads=False, hardware=hardware,
                                     index=found.append)
        return [t for t in found if t.definition == definition and t.evaluation is not None]

    def held_definitions(self) -> set[str]:
        """The definitions whose workloads or traces are held now."""
        return self._workloads.keys() | self._traces.keys()

    def records_held(self) -> tuple[int, int]:
        """(workloads, traces) in memory now."""
        return (sum(map(len, self._workloads.values())), sum(map(len, self._traces.values())))

    def _forget_records(self) -> None:
        self._workloads.clear()
        self._traces.clear()
        self._traces_by_hw.clear()
