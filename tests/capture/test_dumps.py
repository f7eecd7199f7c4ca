"""Tensor dumps: saved with safetensors, referenced from the workload, loaded back equal."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fib_runtime.capture import capture_stats, disable_capture, enable_capture
from fib_runtime.cli.main import main as fib
from fib_runtime.keys import make_key_extractor
from fib_runtime.schema import RandomInput, SafetensorsInput, ScalarInput
from fib_runtime.store import TraceDB
from tests.capture.conftest import PAGED, paged_args

NAME = PAGED["name"]


def capture_calls(db: TraceDB, policy: dict, calls: list[tuple]) -> TraceDB:
    session = enable_capture(db, {"flush_interval_s": 3600, "default": policy})
    record = session.recorder_for(NAME)
    key_of = make_key_extractor(db.definitions[NAME])
    for args in calls:
        record(key_of(args), args)
    disable_capture()
    return TraceDB.open(db.root, strict=True)


def test_int_tensors_round_trip_through_safetensors(db: TraceDB) -> None:
    args = paged_args([3, 0, 5], scale=0.125)
    expected = (args[1].clone(), args[2].clone())
    reloaded = capture_calls(db, {"dump": "int"}, [args])
    args[1].zero_()  # the engine reuses its index buffers: the copy was taken at call time
    args[2].fill_(-1)
    [trace] = reloaded.workloads_for(NAME)
    inputs = trace.workload.inputs
    assert trace.workload.axes == {"batch_size": 3, "len_indptr": 4, "num_kv_indices": 8}
    assert inputs["q"] == RandomInput()
    assert inputs["sm_scale"] == ScalarInput(0.125)
    assert isinstance(inputs["kv_indptr"], SafetensorsInput)
    assert inputs["kv_indptr"].path.startswith(f"blob/workloads/gqa_paged/{NAME}/{NAME}_")
    for name, tensor in zip(("kv_indptr", "kv_indices"), expected, strict=True):
        loaded = reloaded.load_tensor(inputs[name])
        assert loaded.dtype == torch.int32 and torch.equal(loaded, tensor)
    assert reloaded.missing_blobs == set()


def test_named_and_all_dumps(db: TraceDB) -> None:
    args = paged_args([2, 2])
    reloaded = capture_calls(db, {"dump": "named", "dump_inputs": ["q"]}, [args])
    [trace] = reloaded.workloads_for(NAME)
    assert [n for n, d in trace.workload.inputs.items() if isinstance(d, SafetensorsInput)] \
        == ["q"]
    assert torch.equal(reloaded.load_tensor(trace.workload.inputs["q"]), args[0])

    other = paged_args([1, 2, 3])
    reloaded = capture_calls(reloaded, {"dump": "all"}, [other])
    traces = [t for t in reloaded.workloads_for(NAME) if t.workload.axes["batch_size"] == 3]
    kinds = {n: type(d).__name__ for n, d in traces[0].workload.inputs.items()}
    assert kinds == {"q": "SafetensorsInput", "kv_indptr": "SafetensorsInput",
                     "kv_indices": "SafetensorsInput", "sm_scale": "ScalarInput"}


def test_named_dump_of_an_unknown_input_is_refused_at_enable(db: TraceDB) -> None:
    from fib_runtime.capture import CaptureConfigError

    with pytest.raises(CaptureConfigError, match=r"dump_inputs.*nope"):
        enable_capture(db, {"definitions": {NAME: {"dump": "named", "dump_inputs": ["nope"]}}})


def test_a_call_in_a_graph_recording_records_shapes_without_dumps(db: TraceDB,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    monkeypatch.setattr("fib_runtime.cuda_graphs.being_recorded", lambda: True)
    reloaded = capture_calls(db, {"dump": "int"}, [paged_args([4, 4])])
    [trace] = reloaded.workloads_for(NAME)
    assert trace.workload.inputs["kv_indptr"] == RandomInput()
    assert capture_stats()["definitions"][NAME]["graph_captured"] == 1


def test_captured_database_validates(db: TraceDB, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    capture_calls(db, {"dump": "int"}, [paged_args([1, 2]), paged_args([7])])
    assert fib(["validate", str(tmp_path)]) == 0, capsys.readouterr().out
