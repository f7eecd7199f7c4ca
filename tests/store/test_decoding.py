"""The loader's typed decoder gives what the schema's parser gives: the same records, the same
errors (naming the field), and a line of another GPU model is recognised without building."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from fib_runtime.errors import SchemaError
from fib_runtime.schema import Trace
from fib_runtime.store import TraceDB
from fib_runtime.store.decoding import OTHER_HARDWARE, decode_line

TRACE: dict[str, Any] = {
    "definition": "d", "solution": "s",
    "workload": {"uuid": "u1", "axes": {"n": 4},
                 "inputs": {"x": {"type": "random"}, "k": {"type": "scalar", "value": 2},
                            "b": {"type": "safetensors", "path": "blob/a.safetensors",
                                  "tensor_key": "b"}}},
    "evaluation": {"status": "PASSED", "log": "",
                   "correctness": {"max_relative_error": 1e-3, "max_absolute_error": 2},
                   "performance": {"latency_ms": 0.5, "reference_latency_ms": 1.0,
                                   "speedup_factor": 2.0},
                   "environment": {"hardware": "NVIDIA H100 80GB HBM3",
                                   "libs": {"torch": "2.11"}},
                   "timestamp": "2026-12-07T00:00:00"}}


def edited(path: str, value: Any) -> dict[str, Any]:
    """TRACE with one field set (`...` deletes it); path like 'evaluation.log'."""
    record = copy.deepcopy(TRACE)
    *parents, last = path.split(".")
    target = record
    for key in parents:
        target = target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return record


WORKLOAD = {"definition": "d", "solution": None, "workload": TRACE["workload"],
            "evaluation": None}

# Records both parsers take (some only through the fallback) and records both refuse.
CASES = [
    TRACE, WORKLOAD, {"definition": "d", "workload": TRACE["workload"]},
    edited("extra_field", {"a": [1]}),
    edited("workload.inputs.x", {}),  # no type: flashinfer-bench's default
    edited("workload.inputs.x", {"type": "random", "seed": 3}),
    edited("workload.inputs.k", {"value": True}),
    edited("evaluation.log", ...),
    edited("evaluation.correctness.max_relative_error", "NaN"),
    edited("evaluation.correctness.extra", {"note": {"deep": [1, 2]}}),
    edited("evaluation.correctness.max_absolute_error", ...),
    edited("evaluation.performance.speedup_factor", "Infinity"),
    edited("evaluation.environment.libs", {"torch": 2}),
    edited("evaluation.environment.libs", ...),
    edited("evaluation.environment.cuda", "13.0"),
    edited("evaluation.status", "RUNTIME_ERROR") | {},  # refused: correctness must be null
    {**edited("evaluation.correctness", None), "evaluation": {
        **TRACE["evaluation"], "status": "RUNTIME_ERROR", "correctness": None,
        "performance": None}},
    edited("evaluation.log", None),
    edited("evaluation.status", "FINE"),
    edited("evaluation.timestamp", ""),
    edited("evaluation.environment.hardware", ""),
    edited("evaluation.performance.latency_ms", -1.0),
    edited("evaluation.performance.latency_ms", "Infinity"),
    edited("evaluation.correctness.max_relative_error", True),
    edited("workload.axes", {"n": -1}),
    edited("workload.axes", {"n": True}),
    edited("workload.uuid", ""),
    edited("workload.inputs.x", {"type": "zeros"}),
    edited("workload", ...),
    edited("definition", 3),
    edited("solution", 3),
]


def schema_outcome(line: bytes) -> Any:
    try:
        return Trace.from_dict(orjson.loads(line))
    except SchemaError as exc:
        return ("error", str(exc), exc.field)


def decoder_outcome(line: bytes) -> Any:
    try:
        return decode_line(line, None, {})
    except SchemaError as exc:
        return ("error", str(exc), exc.field)


@pytest.mark.parametrize("record", CASES, ids=range(len(CASES)))
def test_the_decoder_gives_the_schemas_record_or_error(record: dict[str, Any]) -> None:
    line = orjson.dumps(record)
    expected, got = schema_outcome(line), decoder_outcome(line)
    if isinstance(expected, Trace):  # the same record, written back the same (NaN != NaN)
        assert isinstance(got, Trace)
        assert orjson.dumps(got.to_dict()) == orjson.dumps(expected.to_dict())
        assert repr(got) == repr(expected)  # the types of numbers and inputs included
    else:
        assert got == expected


def test_a_number_past_a_doubles_range_is_refused_like_orjson_does() -> None:
    line = orjson.dumps(TRACE).replace(b'"latency_ms":0.5', b'"latency_ms":1e999')
    with pytest.raises(orjson.JSONDecodeError) as expected:
        orjson.loads(line)
    with pytest.raises(orjson.JSONDecodeError) as ours:
        decode_line(line, None, {})
    assert str(ours.value) == str(expected.value)


def test_broken_json_raises_what_orjson_raises() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        decode_line(b'{"definition": "d", ', None, {})


def test_a_usual_line_does_not_go_through_the_schemas_parser(monkeypatch) -> None:
    def refuse(data: Any) -> Trace:
        raise AssertionError("the slow path ran")

    monkeypatch.setattr(Trace, "from_dict", refuse)
    assert decode_line(orjson.dumps(TRACE), None, {}).evaluation.performance.latency_ms == 0.5
    assert decode_line(orjson.dumps(WORKLOAD), "H100", {}).is_workload


def test_other_hardware_is_recognised_on_both_paths() -> None:
    usual, unusual = orjson.dumps(TRACE), orjson.dumps(edited("extra_field", 1))
    for line in (usual, unusual):
        assert decode_line(line, "H200", {}) is OTHER_HARDWARE
        assert decode_line(line, "H100", {}).solution == "s"


def test_a_bad_line_in_the_database_names_file_line_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "traces" / "op"
    folder.mkdir(parents=True)
    lines = [orjson.dumps(TRACE), orjson.dumps(edited("workload.axes", {"n": -1}))]
    (folder / "d.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    db = TraceDB.open(tmp_path)
    assert len(db.traces_for("d")) == 1
    [problem] = db.load_errors
    assert (problem.file, problem.line, problem.field) == ("traces/op/d.jsonl", 2,
                                                           "workload.axes.n")
    with pytest.raises(Exception, match=r"traces/op/d.jsonl:2: field 'workload.axes.n'"):
        TraceDB.open(tmp_path, strict=True)


def test_a_loaded_database_adds_no_objects_for_the_garbage_collector(tmp_path: Path) -> None:
    """Records hold no cycles, so they are not tracked by the cyclic collector: a load of
    many traces leaves the collector nothing per trace to scan, then and at every later
    collection (it used to track six objects per trace, three per workload line, and scan
    them all at the first collection after the load)."""
    import gc

    folder = tmp_path / "traces" / "op"
    folder.mkdir(parents=True)
    lines = [orjson.dumps(edited("workload.uuid", f"u{i}")) for i in range(2000)]
    lines += [orjson.dumps(WORKLOAD | {"workload": {**TRACE["workload"], "uuid": f"w{i}"}})
              for i in range(1000)]
    (folder / "d.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    gc.collect()
    before = len(gc.get_objects())
    db = TraceDB.open(tmp_path)
    tracked = len(gc.get_objects()) - before
    assert len(db.traces_for("d")) == 2000 and db.parsed_traces == 3000
    assert tracked < 300, tracked  # the lists and dicts of the index, not the records
    assert not any(gc.is_tracked(x) for x in (
        db.traces_for("d")[0], db.traces_for("d")[0].workload,
        db.traces_for("d")[0].evaluation, db.traces_for("d")[0].workload.inputs))
