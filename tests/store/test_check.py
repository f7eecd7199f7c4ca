"""`fib validate` finds records that load but fit no definition, with file:line and field."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fib_runtime.cli.main import main
from fib_runtime.schema import Definition, Solution
from fib_runtime.store import TraceDB
from fib_runtime.store.check import cross_check
from tests.factories import definition, solution, trace, workload


def _write_lines(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def make_db(root: Path) -> TraceDB:
    db = TraceDB.open(root, create=True)
    db.add_definition(Definition.from_dict(definition()))
    db.add_solution(Solution.from_dict(solution()))
    missing_axis = workload()
    missing_axis["workload"]["axes"] = {}
    fixed_axis = workload()
    fixed_axis["workload"]["axes"]["hidden_size"] = 16
    _write_lines(root / "workloads/rmsnorm/toy_norm_h8.jsonl", [
        workload(),  # 1: fine
        workload(x={"type": "random"}),  # 2: no weight
        workload(x={"type": "random"}, weight={"type": "random"},
                 bias={"type": "random"}),  # 3: bias is not an input
        missing_axis,  # 4
        fixed_axis,  # 5
    ])
    _write_lines(root / "traces/rmsnorm/other.jsonl",
                 [trace("nowhere"), trace("nowhere"), trace()])
    orphan = solution("orphan_sol", "nowhere")
    (root / "solutions/tests/orphan_sol.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "solutions/tests/orphan_sol.json").write_bytes(orjson.dumps(orphan))
    return TraceDB.open(root)


def test_cross_record_problems_name_file_line_and_field(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    assert db.load_errors == []  # each record is well-formed on its own
    found = {str(p) for p in cross_check(db)}
    assert found == {
        "solutions/tests/orphan_sol.json: field 'definition': unknown definition 'nowhere'",
        "workloads/rmsnorm/toy_norm_h8.jsonl:2: field 'workload.inputs.weight': input of "
        "'toy_norm_h8' is missing",
        "workloads/rmsnorm/toy_norm_h8.jsonl:3: field 'workload.inputs.bias': 'toy_norm_h8' "
        "has no such input",
        "workloads/rmsnorm/toy_norm_h8.jsonl:4: field 'workload.axes.batch_size': variable "
        "axis of 'toy_norm_h8' is missing",
        "workloads/rmsnorm/toy_norm_h8.jsonl:5: field 'workload.axes.hidden_size': is 16, but "
        "'toy_norm_h8' fixes it at 8",
        "traces/rmsnorm/other.jsonl:1: field 'definition': unknown definition 'nowhere' "
        "(2 lines from here)",
    }


def test_validate_prints_them_and_exits_1(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    make_db(tmp_path)
    assert main(["validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "error: workloads/rmsnorm/toy_norm_h8.jsonl:4: field 'workload.axes.batch_size'" in out
    assert "6 problems" in out


def test_a_clean_database_has_none(tmp_path: Path) -> None:
    db = TraceDB.open(tmp_path, create=True)
    db.add_definition(Definition.from_dict(definition()))
    db.add_solution(Solution.from_dict(solution()))
    _write_lines(tmp_path / "workloads/rmsnorm/toy_norm_h8.jsonl", [workload()])
    _write_lines(tmp_path / "traces/rmsnorm/toy_norm_h8.jsonl", [trace()])
    assert cross_check(TraceDB.open(tmp_path)) == []
