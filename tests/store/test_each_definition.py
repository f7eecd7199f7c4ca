"""Offline tools read one definition at a time: `fib validate`, `fib report` and `fib merge`
never hold more than the largest definition's records (counted at every record indexed)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fib_runtime.cli.main import main
from fib_runtime.store import TraceDB
from fib_runtime.store.merge import merge
from fib_runtime.store.shards import definition_of_file

DEFINITIONS = ["norm_a", "norm_b", "norm_c.v2"]  # a dot in a name: shards must still group
WORKLOADS, TRACES = 6, 12  # per definition
HARDWARE = ["NVIDIA H100 80GB HBM3", "NVIDIA H200"]


def record_line(name: str, i: int, *, trace: bool) -> bytes:
    workload = {"uuid": f"{name}-w{i}", "axes": {"n": 1 + i % WORKLOADS},
                "inputs": {"x": {"type": "random"}}}
    evaluation = None if not trace else {
        "status": "PASSED", "log": "",
        "correctness": {"max_relative_error": 0.0, "max_absolute_error": 0.0},
        "performance": {"latency_ms": 0.01 * (1 + i % 5), "reference_latency_ms": 0.05,
                        "speedup_factor": 1.0},
        "environment": {"hardware": HARDWARE[i % 2], "libs": {}},
        "timestamp": f"2026-12-07T00:00:{i:02d}"}
    return orjson.dumps({"definition": name, "solution": f"{name}_s{i % 2}" if trace else None,
                         "workload": workload, "evaluation": evaluation}) + b"\n"


def make(root: Path) -> None:
    for name in DEFINITIONS:
        folder = root / "definitions" / "norm"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_bytes(orjson.dumps({
            "name": name, "op_type": "norm", "axes": {"n": {"type": "var"}},
            "inputs": {"x": {"shape": ["n"], "dtype": "float32"}},
            "outputs": {"y": {"shape": ["n"], "dtype": "float32"}},
            "reference": "def run(x):\n    return x\n"}))
        for s in range(2):
            folder = root / "solutions" / "me" / "norm" / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}_s{s}.json").write_bytes(orjson.dumps({
                "name": f"{name}_s{s}", "definition": name, "author": "me",
                "spec": {"language": "python", "target_hardware": ["any"],
                         "entry_point": "main.py::run", "destination_passing_style": False},
                "sources": [{"path": "main.py",
                             "content": f"def run(x):\n    return x  # {s}\n"}]}))
        workloads = root / "workloads" / "norm"
        workloads.mkdir(parents=True, exist_ok=True)
        half = WORKLOADS // 2  # half in the canonical file, half in a capture shard
        (workloads / f"{name}.jsonl").write_bytes(
            b"".join(record_line(name, i, trace=False) for i in range(half)))
        (workloads / f"{name}.host-1.jsonl").write_bytes(
            b"".join(record_line(name, i, trace=False) for i in range(half, WORKLOADS)))
        traces = root / "traces" / "norm"
        traces.mkdir(parents=True, exist_ok=True)
        (traces / f"{name}.jsonl").write_bytes(
            b"".join(record_line(name, i, trace=True) for i in range(TRACES)))


@pytest.fixture
def most_held(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The most workload + trace records any TraceDB held at once, updated as they load."""
    most = [0]
    index = TraceDB._index_trace

    def counting(self: TraceDB, trace) -> None:
        index(self, trace)
        most[0] = max(most[0], sum(self.records_held()))

    monkeypatch.setattr(TraceDB, "_index_trace", counting)
    return most


def test_validate_holds_one_definition_and_counts_all(tmp_path: Path, most_held: list[int],
                                                     capsys) -> None:
    make(tmp_path)
    assert main(["validate", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{3 * WORKLOADS} workloads, {3 * TRACES} traces" in out
    assert most_held[0] == WORKLOADS + TRACES


def test_report_holds_one_definition(tmp_path: Path, most_held: list[int], capsys) -> None:
    make(tmp_path)
    assert main(["report", str(tmp_path), "--no-plots", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in DEFINITIONS)
    assert most_held[0] <= WORKLOADS + TRACES


def test_merge_holds_one_definition_and_copies_everything(tmp_path: Path,
                                                          most_held: list[int]) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    make(src)
    report = merge([src], dest)
    assert (report.workloads, report.traces) == (3 * WORKLOADS, 3 * TRACES)
    # a source and DEST's files of one definition at once (DEST's empty on the first run)
    assert most_held[0] <= 2 * (WORKLOADS + TRACES)
    again = merge([src], dest)
    assert (again.workloads, again.traces, again.duplicates) == (0, 0,
                                                                 3 * (WORKLOADS + TRACES))
    assert most_held[0] <= 2 * (WORKLOADS + TRACES)


def test_a_line_filed_under_another_definition_is_merged_once(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    make(src)
    stray = record_line("norm_b", 99, trace=True)
    with open(src / "traces" / "norm" / "norm_a.jsonl", "ab") as f:
        f.write(stray)
    merge([src], dest)
    assert merge([src], dest).traces == 0
    merged = TraceDB.open(dest)
    assert len(merged.traces_for("norm_b")) == TRACES + 1
    assert len(merged.traces_for("norm_a")) == TRACES


def test_files_are_grouped_by_the_definition_they_are_named_for() -> None:
    known = {"a", "a.b", "c"}
    assert definition_of_file(Path("a.jsonl"), known) == "a"
    assert definition_of_file(Path("a.b.jsonl"), known) == "a.b"
    assert definition_of_file(Path("a.b.host-1.jsonl"), known) == "a.b"
    assert definition_of_file(Path("a.host-1.jsonl"), known) == "a"
    assert definition_of_file(Path("zz.host.jsonl"), known) == "zz.host"
