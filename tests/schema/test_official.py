"""The official FlashInfer Trace data parses and dumps back to equal JSON."""

from __future__ import annotations

from pathlib import Path

import orjson

from fib_runtime.schema import Definition, Trace


def test_every_official_definition_round_trips(official: Path) -> None:
    files = sorted((official / "definitions").rglob("*.json"))
    assert len(files) == 156
    for path in files:
        data = orjson.loads(path.read_bytes())
        assert Definition.from_dict(data).to_dict() == data, path


def test_every_official_workload_line_round_trips(official: Path) -> None:
    lines = 0
    for path in sorted((official / "workloads").rglob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            data = orjson.loads(line)
            assert Trace.from_dict(data).to_dict() == data, path
            lines += 1
    assert lines == 663
