"""A trace's latency is a measurement: negative, NaN and infinite values are refused at load,
naming the file, the line and the field (a latency of -1 used to win the ranking)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from msgspec.structs import replace

from fib_runtime.errors import SchemaError
from fib_runtime.schema import Definition, Trace
from fib_runtime.store import TraceDB
from tests import factories

FIELD = "evaluation.performance.latency_ms"
TRACES = "traces/rmsnorm/toy_norm_h8.jsonl"


def _with_latency(value: Any) -> dict[str, Any]:
    data = factories.trace(hardware="cpu")
    data["evaluation"]["performance"]["latency_ms"] = value
    return data


def _db_with_line(root: Path, value: Any) -> TraceDB:
    """A database whose trace file holds a good line, then the hostile one (line 2)."""
    db = TraceDB.open(root, create=True)
    db.add_definition(Definition.from_dict(factories.definition()))
    path = root / TRACES
    path.parent.mkdir(parents=True)
    lines = [factories.trace(hardware="cpu"), _with_latency(value)]
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return TraceDB.open(root)


BAD = [-1, -1e-9, float("nan"), "NaN", float("inf"), "Infinity", "-Infinity", "inf"]


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_bad_latency_is_refused_at_load_with_file_line_field(tmp_path: Path,
                                                             value: Any) -> None:
    db = _db_with_line(tmp_path, value)
    assert len(db.traces_for("toy_norm_h8")) == 1  # the good line only
    [problem] = db.load_errors
    assert (problem.file, problem.line, problem.field) == (TRACES, 2, FIELD)
    assert f"{TRACES}:2: field '{FIELD}'" in str(problem)


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_bad_latency_is_refused_by_the_parser(value: Any) -> None:
    with pytest.raises(SchemaError) as info:
        Trace.from_dict(_with_latency(value))
    assert info.value.field == FIELD


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")], ids=repr)
def test_the_writer_refuses_what_the_reader_would(tmp_path: Path, value: float) -> None:
    db = TraceDB.open(tmp_path, create=True)
    db.add_definition(Definition.from_dict(factories.definition()))
    good = Trace.from_dict(factories.trace(hardware="cpu"))
    assert good.evaluation is not None and good.evaluation.performance is not None
    bad = replace(good, evaluation=replace(good.evaluation, performance=replace(
        good.evaluation.performance, latency_ms=value)))
    with pytest.raises(SchemaError) as info:
        db.append_traces([bad])
    assert info.value.field == FIELD and TRACES in str(info.value)
    assert not (tmp_path / TRACES).exists()


def test_what_the_format_allows_still_loads(tmp_path: Path) -> None:
    """flashinfer-bench accepts an infinite reference latency or speedup (and a latency of 0,
    its default): those load; the ranking does not let a zero latency win
    (tests/trust/test_digest.py)."""
    data = factories.trace(hardware="cpu")
    data["evaluation"]["performance"].update(reference_latency_ms="Infinity",
                                             speedup_factor="Infinity", latency_ms=0)
    parsed = Trace.from_dict(data)
    assert parsed.evaluation is not None and parsed.evaluation.performance is not None
    assert math.isinf(parsed.evaluation.performance.reference_latency_ms)
