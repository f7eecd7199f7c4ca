"""The FlashInfer adapter's MLA route on CPU: BatchMLAPagedAttentionWrapper imported for real
(its plan signature is the one bound), plan / run replaced by stand-ins keeping FlashInfer's
device copies; a covered decode or causal prefill is served by the catalogue's torch solution,
in place, everything else reaches FlashInfer unchanged and is counted by reason."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest
import torch

import fib_runtime as fib
from tests.adapters.engine_db import engine_db

pytest.importorskip("flashinfer")
import flashinfer.mla
from fib_runtime.adapters import flashinfer as fi
from fib_runtime.adapters.flashinfer import mla

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "definitions"))
from attention_helpers import assert_matches
from test_attention_mla import DECODE, DECODE_LENGTHS, PREFILL, SEQUENCES, mla_inputs, ours

from fib_runtime.build import build_reference
from fib_runtime.catalogue import load_catalogue

WRAPPER = flashinfer.mla.BatchMLAPagedAttentionWrapper


def _stub():
    calls: list[dict] = []

    class Wrapper:
        _backend = "auto"

    real = fi.saved(WRAPPER, "plan") or WRAPPER.plan  # FlashInfer's own, even if installed

    def plan0(self, *args, **kwargs):
        bound = inspect.signature(real).bind(self, *args, **kwargs).arguments
        self._qo_indptr_buf = bound["qo_indptr"].clone()
        self._kv_indptr_buf = bound["kv_indptr"].clone()
        self._kv_indices_buf = torch.cat([bound["kv_indices"], torch.zeros(4, dtype=torch.int32)])

    plan0.__signature__ = inspect.signature(real)

    def run0(self, q_nope, *args, **kwargs):
        calls.append(kwargs)
        return torch.zeros_like(q_nope)

    plan, run = mla.wrap(plan0, run0)
    return Wrapper(), plan, run, calls


def _plan(plan, wrapper, name: str, args: list, **options) -> None:
    if name == DECODE:
        kv_indptr, kv_indices = args[4], args[5]
        qo_indptr = torch.arange(kv_indptr.shape[0], dtype=torch.int32)
    else:
        qo_indptr, kv_indptr, kv_indices = args[4], args[5], args[6]
    settings = {"num_heads": 16, "head_dim_ckv": 512, "head_dim_kpe": 64, "page_size": 1,
                "causal": name == PREFILL, "sm_scale": args[-1],
                "q_data_type": torch.bfloat16, "kv_data_type": torch.bfloat16, **options}
    lengths = settings.pop("kv_len_arr", (kv_indptr[1:] - kv_indptr[:-1]).to(torch.int32))
    plan(wrapper, qo_indptr, kv_indptr, kv_indices, lengths, **settings)


@pytest.fixture
def served(tmp_path: Path):
    session = fib.enable_apply(engine_db(tmp_path / "db", [DECODE, PREFILL], variant="torch_mla"))
    fi.reset()
    try:
        yield
    finally:
        session.__exit__()


def _args(name: str) -> list:
    cases = [(1, k) for k in DECODE_LENGTHS] if name == DECODE else SEQUENCES
    return mla_inputs(name, cases, seed=6)


@pytest.mark.parametrize("name", [DECODE, PREFILL])
def test_a_covered_mla_call_is_routed_in_place(served: None, name: str):
    wrapper, plan, run, calls = _stub()
    args = _args(name)
    want = build_reference(load_catalogue().definitions[name])(*args)
    _plan(plan, wrapper, name, args)
    out = torch.zeros_like(args[0])
    assert run(wrapper, *args[:4], out=out) is out
    assert_matches((out, wrapper.__dict__["_fib_prefill_lse"]), want, "in place")
    assert_matches(run(wrapper, *args[:4], return_lse=True), want, "return_lse")
    assert calls == [] and fi.stats()["routed"] == {"mla.run": 2}
    assert fib.stats()[name]["hits"] == 2
    assert ours(name)["name"] == name


@pytest.mark.parametrize(("name", "options", "reason"), [
    (PREFILL, {"causal": False}, "not_causal"), (DECODE, {"page_size": 64}, "page_size"),
    (DECODE, {"q_data_type": torch.float16}, "dtype"), (DECODE, {"use_profiler": True},
                                                        "use_profiler"),
    (DECODE, {"kv_len_arr": torch.tensor([9, 0, 60, 1, 33], dtype=torch.int32)}, "kv_len"),
])
def test_plans_no_definition_models_reach_flashinfer(served: None, name: str, options: dict,
                                                     reason: str):
    wrapper, plan, run, calls = _stub()
    args = _args(name)
    _plan(plan, wrapper, name, args, **options)
    run(wrapper, *args[:4])
    assert len(calls) == 1 and fi.stats()["unchanged"] == {"mla.run": {reason: 1}}


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"return_lse_base_on_e": True}, "return_lse_base_on_e"),
    ({"profiler_buffer": torch.zeros(4)}, "profiler_buffer"), ({"other": 1}, "unknown_option"),
])
def test_run_options_no_definition_models_reach_flashinfer(served: None, kwargs: dict,
                                                          reason: str):
    wrapper, plan, run, calls = _stub()
    args = _args(DECODE)
    _plan(plan, wrapper, DECODE, args)
    run(wrapper, *args[:4], **kwargs)
    assert calls and fi.stats()["unchanged"] == {"mla.run": {reason: 1}}


@pytest.mark.parametrize("name", [DECODE, PREFILL])
def test_each_mla_definition_has_an_importable_original(name: str):
    from fib_runtime.adapters.flashinfer import originals

    from fib_runtime.original import original_problem, original_solution, untimeable_reason

    fn = getattr(originals, name)
    assert original_problem(fn) is None
    solution = original_solution(load_catalogue().definitions[name], fn)
    assert untimeable_reason(solution) is None
