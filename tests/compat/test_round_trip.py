"""Databases cross over both ways with nothing dropped: flashinfer-bench's into ours, ours into it.

Theirs is written by flashinfer-bench's own code paths (its models, `save_json_file`,
`save_jsonl_file`, `append_jsonl_file`, its tracing with a tensor dump, its CPU environment);
ours by the flows of `fib demo` (catalogue install, capture with dumps, retune on the CPU)
plus a trace of every status. Each side's records, loaded by the other and dumped again, keep
every field and value.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import torch

import fib_runtime as fib
from fib_runtime.catalogue import install
from fib_runtime.hardware import CPU_KEY, current_hardware
from fib_runtime.retuning import RetuneConfig, retune
from fib_runtime.schema import (
    Correctness,
    Environment,
    Evaluation,
    Performance,
    SafetensorsInput,
    Status,
    Trace,
)
from fib_runtime.schema.provenance import TIMING_KEY
from fib_runtime.store import TraceDB

NAME = "bench_scale_m_n4"
REFERENCE = "import torch\n\ndef run(x, scale):\n    return x * scale\n"
# Fields of ours that flashinfer-bench's models do not have (it ignores unknown fields).
THEIRS_LACKS = {"evaluation.environment.hardware_key"}


def differences(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Paths where `theirs` lost or changed a value of `ours` (NaN equals NaN)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        found = []
        for key, value in ours.items():
            where = f"{path}.{key}" if path else key
            if key in theirs:
                found += differences(value, theirs[key], where)
            elif where not in THEIRS_LACKS:
                found.append(where)
        return found
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [p for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
                for p in differences(a, b, f"{path}[{i}]")]
    both_nan = isinstance(ours, float) and isinstance(theirs, float) and math.isnan(ours) \
        and math.isnan(theirs)
    return [] if ours == theirs or both_nan else [path or "."]


def as_json(record: Any) -> Any:
    """A pydantic model or one of our records, as the JSON it is written as."""
    if hasattr(record, "model_dump_json"):
        return orjson.loads(record.model_dump_json())
    return orjson.loads(orjson.dumps(record.to_dict()))


# -- theirs -> ours ------------------------------------------------------------------------

def write_their_database(root: Path) -> dict[str, int]:
    """A database written only by flashinfer-bench's code paths. Returns what it holds."""
    import flashinfer_bench as fb
    from flashinfer_bench.data import (
        AxisConst,
        AxisVar,
        BuildSpec,
        Correctness,
        Definition,
        Evaluation,
        Performance,
        RandomInput,
        ScalarInput,
        Solution,
        SourceFile,
        TensorSpec,
        Trace,
        Workload,
        append_jsonl_file,
        save_json_file,
        save_jsonl_file,
    )
    from flashinfer_bench.tracing import TracingConfig
    from flashinfer_bench.utils import env_snapshot

    definition = Definition(
        name=NAME, op_type="elementwise", axes={"M": AxisVar(), "N": AxisConst(value=4)},
        inputs={"x": TensorSpec(shape=["M", "N"], dtype="float32"),
                "scale": TensorSpec(shape=None, dtype="float32")},
        outputs={"y": TensorSpec(shape=["M", "N"], dtype="float32")},
        reference=REFERENCE, tags=["status:test"], description="x times a scalar")
    save_json_file(definition, root / "definitions" / "elementwise" / f"{NAME}.json")
    solution = Solution(
        name=f"{NAME}_torch", definition=NAME, author="bench",
        spec=BuildSpec(language="python", target_hardware=["cpu"], entry_point="main.py::run",
                       destination_passing_style=False),
        sources=[SourceFile(path="main.py", content=REFERENCE)])
    save_json_file(solution, root / "solutions" / "bench" / f"{solution.name}.json")

    def workload(m: int) -> Workload:
        return Workload(axes={"M": m}, inputs={"x": RandomInput(), "scale": ScalarInput(
            value=0.5)}, uuid=str(uuid.uuid4()))

    save_jsonl_file([Trace(definition=NAME, workload=workload(m)) for m in (1, 7)],
                    root / "workloads" / "elementwise" / f"{NAME}.jsonl")
    env = env_snapshot("cpu")  # its CPU environment: the CPU's model name as hardware
    ok = dict(correctness=Correctness(), performance=Performance(
        latency_ms=0.25, reference_latency_ms=0.5, speedup_factor=2.0))
    results = [("PASSED", ok), ("PASSED", dict(correctness=Correctness(),
                                               performance=Performance())),
               ("INCORRECT_NUMERICAL", dict(correctness=Correctness(
                   max_relative_error=float("inf"), max_absolute_error=float("nan")))),
               ("INCORRECT_SHAPE", {}), ("INCORRECT_DTYPE", {}), ("RUNTIME_ERROR", {}),
               ("COMPILE_ERROR", {}), ("TIMEOUT", {})]
    traces = [Trace(definition=NAME, workload=workload(3), solution=solution.name,
                    evaluation=Evaluation(status=status, environment=env, log=status.lower(),
                                          timestamp="2026-12-01T00:00:00", **metrics))
              for status, metrics in results]
    trace_file = root / "traces" / "elementwise" / f"{NAME}.jsonl"
    save_jsonl_file(traces[:4], trace_file)
    append_jsonl_file(traces[4:], trace_file)

    # Its tracing, dumping the tensor input to a safetensors blob.
    config = {NAME: TracingConfig(input_dump_policy=["x"])}
    with fb.enable_tracing(str(root), config):
        for m in (2, 5):
            fb.apply(NAME, args=(torch.ones(m, 4), 0.5), fallback=lambda x, s: x * s)
    return {"workloads": 4, "traces": len(traces)}


def test_their_database_loads_here_with_nothing_dropped(bench_data: ModuleType,
                                                        tmp_path: Path) -> None:
    expected = write_their_database(tmp_path)
    theirs = bench_data.TraceSet.from_path(str(tmp_path))
    db = TraceDB.open(tmp_path)
    assert db.load_errors == []
    assert list(db.definitions) == [NAME] and list(db.solutions) == [f"{NAME}_torch"]
    # Written by save_json_file: the axes carry no "type"; they resolve as in flashinfer-bench.
    raw_axes = orjson.loads(next((tmp_path / "definitions").rglob("*.json")).read_bytes())["axes"]
    assert raw_axes == {"M": {}, "N": {"value": 4}}
    assert db.definitions[NAME].var_axes == ("M",)
    assert db.definitions[NAME].const_axes == {"N": 4}

    workloads, traces = db.workloads_for(NAME), db.traces_for(NAME)
    assert (len(workloads), len(traces)) == (expected["workloads"], expected["traces"])
    dumped = [t for t in workloads if isinstance(t.workload.inputs["x"], SafetensorsInput)]
    assert sorted(t.workload.axes["M"] for t in dumped) == [2, 5]
    for trace in dumped:
        tensor = db.load_tensor(trace.workload.inputs["x"])
        assert tensor.shape == (trace.workload.axes["M"], 4) and bool((tensor == 1).all())
    # Its CPU environment names the CPU model; here that is the CPU key.
    assert len(db.traces_for(NAME, CPU_KEY)) == expected["traces"]
    assert [t.evaluation.status.value for t in traces] == [
        "PASSED", "PASSED", "INCORRECT_NUMERICAL", "INCORRECT_SHAPE", "INCORRECT_DTYPE",
        "RUNTIME_ERROR", "COMPILE_ERROR", "TIMEOUT"]

    # Nothing dropped: each record of theirs, read here and written back, is the same record.
    pairs = [(theirs.definitions[NAME], db.definitions[NAME]),
             (theirs.get_solution(f"{NAME}_torch"), db.solutions[f"{NAME}_torch"])]
    pairs += list(zip(theirs.workloads[NAME], workloads, strict=True))
    pairs += list(zip(theirs.traces[NAME], traces, strict=True))
    for their_record, ours in pairs:
        again = type(their_record).model_validate(orjson.loads(orjson.dumps(ours.to_dict())))
        assert differences(as_json(their_record), as_json(again)) == [], their_record


# -- ours -> theirs ------------------------------------------------------------------------

def every_status(db: TraceDB, definition: str, solution: str, workload: Trace) -> list[Trace]:
    """One trace of each status, as retune writes them, with non-finite errors included."""
    hw = current_hardware()
    env = Environment(hw.name, hw.libs, {"hardware_key": hw.key})
    good = Correctness(1e-3, 2e-3, {"checked": 3})
    results = {
        Status.PASSED: (good, Performance(0.5, 1.0, 2.0)),
        Status.INCORRECT_NUMERICAL: (Correctness(float("nan"), float("inf")), None),
        Status.INCORRECT_SHAPE: (None, None), Status.INCORRECT_DTYPE: (None, None),
        Status.RUNTIME_ERROR: (None, None), Status.COMPILE_ERROR: (None, None),
        Status.TIMEOUT: (None, None),
    }
    traces = [Trace(definition, workload.workload, solution, Evaluation(
        status, env, "2026-12-01T00:00:00+00:00", f"{status.value} log", correctness,
        performance)) for status, (correctness, performance) in results.items()]
    db.append_traces(traces)
    return traces


def write_our_database(root: Path) -> TraceDB:
    """Catalogue install, capture with tensor dumps, retune on the CPU, every status."""
    db = TraceDB.open(root, create=True)
    install(db)

    @fib.apply("rmsnorm_h4096")
    def rmsnorm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * w

    with torch.no_grad(), fib.enable_capture(db, {"default": {"dump": "all"}}):
        for m in (1, 3):
            rmsnorm(torch.randn(m, 4096, dtype=torch.bfloat16),
                    torch.randn(4096, dtype=torch.bfloat16))
    db = TraceDB.open(root)
    # Traces of every timing regime the CPU has (the regime rides in environment.libs).
    summary = retune(db, definitions=["rmsnorm_h4096"], warmup=1, iters=2, progress=False,
                     config=RetuneConfig(timings=("device", "eager")))
    assert summary.counts().get("PASSED", 0) >= 4
    assert {o.timing for o in summary.outcomes} == {"device", "eager"}
    db = TraceDB.open(root)
    every_status(db, "rmsnorm_h4096", db.solutions_for("rmsnorm_h4096")[0].name,
                 db.workloads_for("rmsnorm_h4096")[0])
    return TraceDB.open(root)


def test_our_database_loads_there_with_nothing_dropped(bench_data: ModuleType,
                                                       tmp_path: Path) -> None:
    db = write_our_database(tmp_path)
    assert db.load_errors == []
    statuses = {t.evaluation.status for t in db.traces_for("rmsnorm_h4096")}
    assert statuses == set(Status)
    workloads = db.workloads_for("rmsnorm_h4096")
    assert all(isinstance(d, SafetensorsInput) for t in workloads
               for d in t.workload.inputs.values())

    theirs = bench_data.TraceSet.from_path(str(tmp_path))  # raises at its first refusal
    eager = [t for t in theirs.traces["rmsnorm_h4096"]
             if t.evaluation.environment.libs.get(TIMING_KEY) == "eager"]
    assert eager, "flashinfer-bench kept no trace of the eager regime"
    assert sorted(theirs.definitions) == sorted(db.definitions)
    assert sorted(s.name for sols in theirs.solutions.values() for s in sols) == \
        sorted(db.solutions)
    for name, definition in db.definitions.items():
        assert differences(as_json(definition), as_json(theirs.definitions[name])) == []
    for name, solution in db.solutions.items():
        assert differences(as_json(solution), as_json(theirs.get_solution(name))) == []
    for name in db.definitions:
        ours = db.workloads_for(name) + db.traces_for(name)
        mine = theirs.workloads.get(name, []) + theirs.traces.get(name, [])
        assert len(ours) == len(mine), name
        for our_record, their_record in zip(ours, mine, strict=True):
            assert differences(as_json(our_record), as_json(their_record)) == []
    # It builds the inputs of every workload from our tensor dumps (shapes and dtypes checked).
    from flashinfer_bench.bench.utils import gen_inputs, load_safetensors

    for name, their_workloads in theirs.workloads.items():
        definition = theirs.definitions[name]
        for trace in their_workloads:
            dumped = load_safetensors(definition, trace.workload, tmp_path)
            inputs = gen_inputs(definition, trace.workload, "cpu", dumped)
            assert len(inputs) == len(definition.inputs) and dumped
