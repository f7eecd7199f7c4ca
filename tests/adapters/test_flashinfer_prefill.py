"""The FlashInfer adapter's prefill routes on CPU: FlashInfer's prefill wrappers are imported for
real (their plan signatures are the ones bound), their plan / run replaced by stand-ins that
keep FlashInfer's device copies (its own need CUDA); covered calls are served by the
catalogue's torch solution, in place, and everything else reaches FlashInfer unchanged and is
counted by reason."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest
import torch

import fib_runtime as fib
from tests.adapters.engine_db import engine_db

pytest.importorskip("flashinfer")
import flashinfer.prefill
from fib_runtime.adapters import flashinfer as fi
from fib_runtime.adapters.flashinfer import prefill

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "definitions"))
from attention_helpers import assert_matches
from test_attention_prefill import SEQUENCES, ours, prefill_inputs

from fib_runtime.build import build_reference
from fib_runtime.catalogue import load_catalogue

PAGED = flashinfer.prefill.BatchPrefillWithPagedKVCacheWrapper
RAGGED = flashinfer.prefill.BatchPrefillWithRaggedKVCacheWrapper


def _stub(paged: bool):
    """prefill.wrap around stand-ins with FlashInfer's plan signature: plan keeps device
    copies on the wrapper as FlashInfer's does; run records its calls."""
    calls: list[dict] = []

    class Wrapper:
        _kv_layout = "NHD"

    def plan0(self, *args, **kwargs):
        bound = inspect.signature(real).bind(self, *args, **kwargs).arguments
        self._qo_indptr_buf = bound["qo_indptr"].clone()
        if paged:
            self._paged_kv_indptr_buf = bound["paged_kv_indptr"].clone()
            self._paged_kv_indices_buf = bound["paged_kv_indices"].clone()
            self._paged_kv_last_page_len_buf = bound["paged_kv_last_page_len"].clone()
        else:
            self._kv_indptr_buf = bound["kv_indptr"].clone()

    cls = PAGED if paged else RAGGED
    real = fi.saved(cls, "plan") or cls.plan  # FlashInfer's own, even if installed
    plan0.__signature__ = inspect.signature(real)

    def run0(self, q, *args, **kwargs):
        calls.append(kwargs)
        return torch.zeros_like(q)

    plan, run = prefill.wrap(paged, plan0, run0)
    return Wrapper(), plan, run, calls


def _plan(plan, wrapper, name: str, args: list, **options) -> None:
    """The engine's plan call for the inputs `args` of definition `name`."""
    options = {"causal": True, "q_data_type": torch.bfloat16, **options}
    if "ragged" in name:
        plan(wrapper, args[3], args[4], 32, args[1].shape[1], 128, **options)
        return
    page_size = args[1].shape[1]
    last = args[6] if page_size > 1 else \
        (args[4][1:] - args[4][:-1]).clamp(max=1).to(torch.int32)
    plan(wrapper, args[3], args[4], args[5], last, 32, args[1].shape[2], 128, page_size,
         **options)


def _run(run, wrapper, name: str, args: list, **kwargs):
    kv = ((args[1], args[2]),) if "paged" in name else (args[1], args[2])
    return run(wrapper, args[0], *kv, **kwargs)


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest):
    name = request.param
    session = fib.enable_apply(engine_db(tmp_path / "db", [name], variant="torch_prefill"))
    fi.reset()
    try:
        yield name
    finally:
        session.__exit__()


NAMES = ["gqa_paged_prefill_causal_h32_kv8_d128_ps1", "gqa_paged_prefill_causal_h32_kv4_d128_ps16",
         "gqa_ragged_prefill_causal_h32_kv8_d128"]


@pytest.mark.parametrize("served", NAMES, indirect=True)
def test_a_covered_prefill_is_routed_in_place_with_the_plan_state(served: str):
    name = served
    paged = "paged" in name
    wrapper, plan, run, calls = _stub(paged)
    args = prefill_inputs(name, SEQUENCES, seed=2)
    want_out, want_lse = build_reference(load_catalogue().definitions[name])(*args)
    _plan(plan, wrapper, name, args, sm_scale=args[-1])
    out = torch.zeros_like(args[0])
    assert _run(run, wrapper, name, args, out=out) is out
    assert_matches((out, wrapper.__dict__[prefill._LSE]), (want_out, want_lse), "in place")
    assert_matches(_run(run, wrapper, name, args, return_lse=True), (want_out, want_lse),
                   "return_lse")
    lse_buffer = torch.empty_like(want_lse)
    got, lse = _run(run, wrapper, name, args, out=out, lse=lse_buffer, return_lse=True)
    assert got is out and lse is lse_buffer
    assert_matches((got, lse), (want_out, want_lse), "buffers")
    function = "prefill.paged.run" if paged else "prefill.ragged.run"
    assert calls == [] and fi.stats()["routed"] == {function: 3}
    assert fib.stats()[name]["hits"] == 3


@pytest.mark.parametrize("served", NAMES[:1], indirect=True)
def test_a_routed_run_without_return_lse_reuses_the_scratch_lse(served: str):
    wrapper, plan, run, _ = _stub(True)
    args = prefill_inputs(served, SEQUENCES)
    _plan(plan, wrapper, served, args)
    _run(run, wrapper, served, args)
    buffer = wrapper.__dict__[prefill._LSE]
    for _ in range(2):
        _run(run, wrapper, served, args)
    assert wrapper.__dict__[prefill._LSE] is buffer


@pytest.mark.parametrize("served", NAMES[:1], indirect=True)
@pytest.mark.parametrize(("options", "reason"), [
    ({"causal": False}, "not_causal"), ({"custom_mask": torch.ones(4, dtype=torch.bool)},
                                        "custom_mask"),
    ({"pos_encoding_mode": "ROPE_LLAMA"}, "pos_encoding"), ({"window_left": 128}, "window"),
    ({"logits_soft_cap": 30.0}, "soft_cap"), ({"q_data_type": torch.float16}, "dtype"),
    ({"kv_data_type": torch.float8_e4m3fn}, "dtype"), ({"head_dim_vo": 64}, "head_dim_vo"),
    ({"use_fp16_qk_reduction": True}, "use_fp16_qk_reduction"),
])
def test_plans_no_definition_models_reach_flashinfer(served: str, options: dict, reason: str):
    wrapper, plan, run, calls = _stub(True)
    args = prefill_inputs(served, SEQUENCES)
    _plan(plan, wrapper, served, args, **options)
    _run(run, wrapper, served, args)
    assert len(calls) == 1
    assert fi.stats() == {"routed": {}, "unchanged": {"prefill.paged.run": {reason: 1}}}


@pytest.mark.parametrize("served", NAMES[2:], indirect=True)
@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"k_scale": 0.5}, "fp8_scales"), ({"lse_base": "e"}, "lse_base"),
    ({"window_left": 64}, "window"), ({"made_up": 1}, "unknown_option"),
])
def test_run_options_no_definition_models_reach_flashinfer(served: str, kwargs: dict,
                                                          reason: str):
    wrapper, plan, run, calls = _stub(False)
    args = prefill_inputs(served, SEQUENCES)
    _plan(plan, wrapper, served, args)
    _run(run, wrapper, served, args, **kwargs)
    assert calls and fi.stats()["unchanged"] == {"prefill.ragged.run": {reason: 1}}


def test_other_shapes_and_page_sizes_are_left_to_flashinfer(tmp_path: Path):
    """Page size 64 has no definition (not routed); 16 query heads make a definition name the
    database does not hold: the site falls back to FlashInfer's run and fib counts it."""
    name = "gqa_paged_prefill_causal_h32_kv8_d128_ps1"
    with fib.enable_apply(engine_db(tmp_path / "db", [name], variant="torch_prefill")):
        fi.reset()
        wrapper, plan, run, calls = _stub(True)
        args = prefill_inputs("gqa_paged_prefill_causal_h32_kv8_d128_ps16", SEQUENCES)
        big = [args[0], args[1].repeat(1, 4, 1, 1), args[2].repeat(1, 4, 1, 1), *args[3:]]
        plan(wrapper, big[3], big[4], big[5], big[6], 32, 8, 128, 64, causal=True,
             q_data_type=torch.bfloat16)
        _run(run, wrapper, name, big)
        assert fi.stats()["unchanged"] == {"prefill.paged.run": {"page_size": 1}}
        args = prefill_inputs(name, SEQUENCES)
        q16 = args[0][:, :16].contiguous()
        plan(wrapper, args[3], args[4], args[5], torch.ones(6, dtype=torch.int32), 16, 8, 128,
             1, causal=True, q_data_type=torch.bfloat16)
        run(wrapper, q16, (args[1], args[2]))
        assert len(calls) == 2  # both reached FlashInfer's run
        assert fib.stats()["gqa_paged_prefill_causal_h16_kv8_d128_ps1"]["fallbacks"] == \
            {"unknown_definition": 1}


def test_install_replaces_and_uninstall_restores_the_prefill_wrappers():
    fi.uninstall()  # whatever an earlier test left installed
    own = {cls: (cls.plan, cls.run) for cls in (PAGED, RAGGED)}
    fi.install()
    try:
        assert all((cls.plan, cls.run) != pair for cls, pair in own.items())
        # the replacement binds FlashInfer's own plan signature
        assert list(inspect.signature(fi.saved(PAGED, "plan")).parameters)[1] == "qo_indptr"
    finally:
        fi.uninstall()
    assert all((cls.plan, cls.run) == pair for cls, pair in own.items())


@pytest.mark.parametrize("name", NAMES)
def test_each_prefill_definition_has_an_importable_original(name: str):
    from fib_runtime.adapters.flashinfer import originals

    from fib_runtime.original import original_problem, original_solution, untimeable_reason

    fn = getattr(originals, name)
    assert fn is getattr(originals, name) and original_problem(fn) is None
    solution = original_solution(load_catalogue().definitions[name], fn)
    assert untimeable_reason(solution) is None
    assert ours(name)["name"] == name
