"""Capture of the prefill and MLA definitions' index tensors (qo_indptr, kv_indptr, kv_indices,
kv_last_page_len): dumped as the call saw them, so that retune materialises the real mix of
sequence lengths and pages (not one generated from the axes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from fib_runtime.capture import disable_capture, enable_capture
from fib_runtime.catalogue import load_catalogue
from fib_runtime.keys import make_key_extractor
from fib_runtime.measure.inputs import materialise
from fib_runtime.schema import SafetensorsInput
from fib_runtime.store import TraceDB

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "definitions"))
from test_attention_mla import DECODE, PREFILL, mla_inputs
from test_attention_prefill import NAMES, prefill_inputs

CONFIG = {"flush_interval_s": 3600, "definitions": {
    "gqa_*_prefill_*": {"dump": "int", "key": "kv_bucket", "per_key": 4},
    "mla_paged_*": {"dump": "int", "key": "kv_bucket", "per_key": 4}}}
INDEX_INPUTS = ("qo_indptr", "kv_indptr", "kv_indices", "kv_last_page_len")


def _inputs(name: str, sequences: list[tuple[int, int]]) -> list:
    if name == DECODE:
        return mla_inputs(name, [(1, k) for _, k in sequences])
    return mla_inputs(name, sequences) if name == PREFILL else prefill_inputs(name, sequences)


def _capture(tmp_path: Path, name: str, calls: list[list]) -> TraceDB:
    db = TraceDB.open(tmp_path / "db", create=True)
    definition = load_catalogue().definitions[name]
    db.add_definition(definition)
    session = enable_capture(db, CONFIG)
    record = session.recorder_for(name)
    key_of = make_key_extractor(definition)
    for args in calls:
        record(key_of(tuple(args)), tuple(args))
    disable_capture()
    return TraceDB.open(db.root, strict=True)


@pytest.mark.parametrize("name", [*NAMES, DECODE, PREFILL])
def test_index_tensors_are_captured_and_replayed_as_called(tmp_path: Path, name: str):
    args = _inputs(name, [(5, 9), (0, 0), (37, 37), (6, 2)])
    definition = load_catalogue().definitions[name]
    db = _capture(tmp_path, name, [args])
    [trace] = db.workloads_for(name)
    dumped = [n for n, d in trace.workload.inputs.items() if isinstance(d, SafetensorsInput)]
    assert dumped == [n for n in definition.inputs if n in INDEX_INPUTS]
    replayed = materialise(definition, trace.workload, load_tensor=db.load_tensor,
                           alternates=0).args
    for i, input_name in enumerate(definition.inputs):
        if input_name in INDEX_INPUTS:
            assert torch.equal(replayed[i], args[i]), input_name
        elif torch.is_tensor(args[i]):  # the data is random, its shape the call's
            assert replayed[i].shape == args[i].shape and replayed[i].dtype == args[i].dtype
    from fib_runtime.build import build_reference

    out, lse = build_reference(definition)(*replayed)  # the replayed mix is a valid workload
    assert out.shape[0] == args[0].shape[0] and torch.isneginf(lse).any()


def test_same_shapes_other_mix_is_another_workload(tmp_path: Path):
    """The kv_bucket key tells apart two calls of equal shapes (queries, page pool) whose
    sequences differ in mean KV length by more than a power of two; the same mix again (other
    values) is a duplicate."""
    name = "gqa_paged_prefill_causal_h32_kv8_d128_ps1"
    short = prefill_inputs(name, [(16, 16), (16, 16)], spare_pages=173)
    again = prefill_inputs(name, [(16, 16), (16, 16)], seed=1, spare_pages=173)
    long = prefill_inputs(name, [(16, 100), (16, 100)])
    assert short[1].shape == long[1].shape and short[0].shape == long[0].shape
    assert len(_capture(tmp_path, name, [short, again]).workloads_for(name)) == 1
    assert len(_capture(tmp_path / "other", name, [short, long]).workloads_for(name)) == 2
