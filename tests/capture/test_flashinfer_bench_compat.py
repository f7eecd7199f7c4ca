"""What capture writes loads in flashinfer-bench (required in CI; see tests/conftest.py)."""

from __future__ import annotations

from types import ModuleType

from fib_runtime.capture import disable_capture, enable_capture
from fib_runtime.keys import make_key_extractor
from fib_runtime.store import TraceDB
from tests.capture.conftest import PAGED, paged_args


def test_captured_workloads_load_in_flashinfer_bench(db: TraceDB, bench_data: ModuleType
                                                     ) -> None:
    session = enable_capture(db, {"flush_interval_s": 3600, "default": {"dump": "int"}})
    record = session.recorder_for(PAGED["name"])
    key_of = make_key_extractor(db.definitions[PAGED["name"]])
    for lengths in ([1, 2], [3, 4, 5]):
        args = paged_args(lengths, scale=0.25)
        record(key_of(args), args)
    disable_capture()
    loaded = bench_data.TraceSet.from_path(str(db.root))
    workloads = loaded.workloads[PAGED["name"]]
    assert sorted(t.workload.axes["batch_size"] for t in workloads) == [2, 3]
    for trace in workloads:
        inputs = trace.workload.inputs
        assert [inputs[n].type for n in ("q", "kv_indptr", "kv_indices", "sm_scale")] == \
            ["random", "safetensors", "safetensors", "scalar"]
        assert inputs["sm_scale"].value == 0.25
        assert (db.root / inputs["kv_indptr"].path).is_file()
