"""Many processes appending to one file at once: whole lines, nothing lost."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import orjson

from fib_runtime.schema import Definition, Trace
from fib_runtime.store import TraceDB
from tests.factories import definition, trace

PROCESSES = 8
PER_PROCESS = 10_000


def _append_many(root: str, worker: int) -> None:
    db = TraceDB.open(root)
    records = [Trace.from_dict(trace(batch=worker * PER_PROCESS + i + 1))
               for i in range(PER_PROCESS)]
    for start in range(0, PER_PROCESS, 50):  # many small appends, as retune/capture do
        db.append_traces(records[start:start + 50])


def test_eight_processes_append_80k_whole_lines(tmp_path: Path) -> None:
    TraceDB.open(tmp_path, create=True).add_definition(Definition.from_dict(definition()))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(PROCESSES)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
        assert proc.exitcode == 0
    lines = (tmp_path / "traces/rmsnorm/toy_norm_h8.jsonl").read_bytes().splitlines()
    assert len(lines) == PROCESSES * PER_PROCESS
    batches = sorted(orjson.loads(line)["workload"]["axes"]["batch_size"] for line in lines)
    assert batches == list(range(1, PROCESSES * PER_PROCESS + 1))
