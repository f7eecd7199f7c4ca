"""The FlashInfer adapter on CPU: FlashInfer's Python API is imported for real, covered calls
are served by the catalogue's torch solutions from a database measured on this machine, and
uncovered ones must reach FlashInfer itself (its CUDA kernels then refuse CPU tensors, which
is how a test without a GPU sees that the call went there), as its counters say."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import fib_runtime as fib
from fib_runtime.store import TraceDB
from tests.adapters.engine_db import engine_db

pytest.importorskip("flashinfer")
import flashinfer
import flashinfer.activation
import flashinfer.decode
import flashinfer.norm
from fib_runtime.adapters import flashinfer as fi
from fib_runtime.adapters.flashinfer import decode

H = 4096


def _reference(x: torch.Tensor, r: torch.Tensor, w: torch.Tensor, eps: float = 1e-5):
    s = x.float() + r.float()
    out = s * torch.rsqrt(s.square().mean(-1, keepdim=True) + eps) * w.float()
    return out.bfloat16(), s.bfloat16()


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[None]:
    session = fib.enable_apply(engine_db(tmp_path / "db"))
    fi.reset()
    fi.install()
    try:
        yield
    finally:
        fi.uninstall()
        session.__exit__()


def _tensors(rows: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(rows)
    x, r = torch.randn(2, rows, H, generator=g).bfloat16()
    return x, r, torch.randn(H, generator=g).bfloat16()


def test_fused_add_rmsnorm_updates_both_tensors_in_place_and_returns_none(installed: None):
    x, r, w = _tensors()
    x_id, r_id = x.data_ptr(), r.data_ptr()
    expected_out, expected_res = _reference(x, r, w)
    assert flashinfer.norm.fused_add_rmsnorm(x, r, w, 1e-5) is None
    assert (x.data_ptr(), r.data_ptr()) == (x_id, r_id)
    torch.testing.assert_close(x, expected_out)
    torch.testing.assert_close(r, expected_res, rtol=0, atol=0)
    assert fi.stats()["routed"] == {"fused_add_rmsnorm": 1}
    assert fib.stats()["fused_add_rmsnorm_residual_h4096"]["hits"] == 1
    # The top-level re-export is the same replacement, unless flashinfer-bench (imported by
    # other tests) had already put its own wrapper there: install leaves another's wrapper be.
    if "flashinfer_bench" not in sys.modules:
        assert flashinfer.fused_add_rmsnorm is flashinfer.norm.fused_add_rmsnorm


def test_out_buffers_are_written(installed: None):
    x, _, w = _tensors(3)
    out = torch.zeros_like(x)
    assert flashinfer.norm.rmsnorm(x, w, 1e-5, out=out) is out
    torch.testing.assert_close(out, torch.nn.functional.rms_norm(x.float(), (H,), w.float(),
                                                                 1e-5).bfloat16())
    gate_up = torch.randn(3, 2 * 14336).bfloat16()
    act = torch.zeros(3, 14336, dtype=torch.bfloat16)
    assert flashinfer.activation.silu_and_mul(gate_up, out=act) is act
    gate, up = gate_up.float().chunk(2, dim=-1)
    torch.testing.assert_close(act, (torch.nn.functional.silu(gate) * up).bfloat16())
    value = flashinfer.norm.rmsnorm(x, w, 1e-5)
    torch.testing.assert_close(value, out, rtol=0, atol=0)
    assert fi.stats()["routed"] == {"rmsnorm": 2, "silu_and_mul": 1}


@pytest.mark.parametrize(("case", "reason"), [
    ("eps", "no_definition"), ("dtype", "no_definition"), ("hidden", "no_definition"),
    ("strided", "layout"),
])
def test_uncovered_calls_reach_flashinfer_unchanged(installed: None, case: str, reason: str):
    x, r, w = _tensors()
    eps = 1e-5
    if case == "eps":
        eps = 1e-6  # h4096's definitions are eps 1e-5
    elif case == "dtype":  # no definition in float64
        x, r, w = x.double(), r.double(), w.double()
    elif case == "hidden":
        x, r, w = x[:, :1024].contiguous(), r[:, :1024].contiguous(), w[:1024].contiguous()
    elif case == "strided":
        x = x.t().contiguous().t()
    before = (x.clone(), r.clone())
    # FlashInfer's CUDA kernel, given CPU tensors, refuses them: the call reached FlashInfer.
    with pytest.raises((RuntimeError, AssertionError)) as raised:
        flashinfer.norm.fused_add_rmsnorm(x, r, w, eps)
    assert "fib_runtime" not in str(raised.traceback[-1].path)
    assert fi.stats() == {"routed": {}, "unchanged": {"fused_add_rmsnorm": {reason: 1}}}
    assert torch.equal(x, before[0]) and torch.equal(r, before[1])
    assert fib.stats().get("fused_add_rmsnorm_residual_h4096", {}).get("hits", 0) == 0


def test_definitions_not_in_the_database_are_left_to_flashinfer(tmp_path: Path):
    """The call goes to the definition's site, which has nothing to serve and calls
    FlashInfer's own function (the site's fallback); nothing counts as a hit."""
    session = fib.enable_apply(engine_db(tmp_path / "db", ["rmsnorm_h4096"]))
    fi.reset()
    fi.install()
    try:
        x, r, w = _tensors()
        with pytest.raises((RuntimeError, AssertionError)) as raised:
            flashinfer.norm.fused_add_rmsnorm(x, r, w, 1e-5)
        assert any("site-packages/flashinfer/" in str(e.path) for e in raised.traceback)
        counted = fib.stats()["fused_add_rmsnorm_residual_h4096"]
        assert counted["hits"] == 0 and counted["fallbacks"] == {"unknown_definition": 1}
    finally:
        fi.uninstall()
        session.__exit__()


def test_installed_before_dispatch_is_switched_on_it_still_routes(tmp_path: Path):
    """An engine may install the adapter (and plan) before fib-runtime is switched on: the
    routes are the definitions' sites, which follow dispatch when it comes on."""
    fi.reset()
    fi.install()
    try:
        x, r, w = _tensors()
        with pytest.raises((RuntimeError, AssertionError)):  # off: FlashInfer itself
            flashinfer.norm.fused_add_rmsnorm(x.clone(), r.clone(), w, 1e-5)
        with fib.enable_apply(engine_db(tmp_path / "db")):
            expected_out, expected_res = _reference(x, r, w)
            assert flashinfer.norm.fused_add_rmsnorm(x, r, w, 1e-5) is None
            torch.testing.assert_close(x, expected_out)
            torch.testing.assert_close(r, expected_res, rtol=0, atol=0)
            assert fib.stats()["fused_add_rmsnorm_residual_h4096"]["hits"] == 1
    finally:
        fi.uninstall()


def test_install_is_idempotent_and_uninstall_restores_flashinfer(tmp_path: Path):
    originals = (flashinfer.norm.rmsnorm, flashinfer.norm.fused_add_rmsnorm,
                 flashinfer.activation.silu_and_mul, flashinfer.rmsnorm,
                 flashinfer.decode.BatchDecodeWithPagedKVCacheWrapper.run)
    fi.install()
    replaced = flashinfer.norm.rmsnorm
    fi.install()
    assert flashinfer.norm.rmsnorm is replaced is flashinfer.rmsnorm
    assert replaced is not originals[0]
    fi.uninstall()
    assert (flashinfer.norm.rmsnorm, flashinfer.norm.fused_add_rmsnorm,
            flashinfer.activation.silu_and_mul, flashinfer.rmsnorm,
            flashinfer.decode.BatchDecodeWithPagedKVCacheWrapper.run) == originals
    assert not fi.installed()


def test_install_from_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(fi.ENV_VAR, raising=False)
    assert not fi.install_from_env() and not fi.installed()
    monkeypatch.setenv(fi.ENV_VAR, "1")
    try:
        assert fi.install_from_env() and fi.installed()
    finally:
        fi.uninstall()


class _Wrapper:
    _kv_layout = "NHD"


@pytest.mark.parametrize(("plan", "reason"), [
    ({}, None), ({"layout": "HND"}, "layout"), ({"page_size": 64}, "page_size"),
    ({"pos": "ROPE_LLAMA"}, "pos_encoding"), ({"window": 128}, "window"),
    ({"cap": 30.0}, "soft_cap"), ({"q": torch.float16}, "dtype"),
    ({"kv": torch.float8_e4m3fn}, "dtype"),
])
def test_decode_plans_that_definitions_do_not_model_are_not_routed(plan: dict, reason):
    wrapper = _Wrapper()
    wrapper._kv_layout = plan.get("layout", "NHD")
    got = decode._plan_reason(wrapper, plan.get("page_size", 16), plan.get("pos", "NONE"),
                              plan.get("window", -1), plan.get("cap"),
                              plan.get("q", torch.bfloat16), plan.get("kv"), None)
    assert got == reason


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({}, None), ({"return_lse": True}, "return_lse"), ({"k_scale": 0.5}, "fp8_scales"),
    ({"sinks": torch.zeros(32)}, "sinks"), ({"window_left": 64}, "window"),
    ({"q_len_per_req": 2}, "multi_token"),
])
def test_decode_run_options_that_definitions_do_not_model_are_not_routed(kwargs, reason):
    return_lse = kwargs.pop("return_lse", False)
    assert decode._run_reason((), return_lse, kwargs) == reason
    assert decode.definition_name(32, 8, 128, 16) == "gqa_paged_decode_h32_kv8_d128_ps16"


def _stub_decode(tmp_path: Path):
    """decode.wrap around stand-ins of FlashInfer's plan / run (FlashInfer's own need CUDA):
    plan keeps device copies on the wrapper as FlashInfer's does; run records its calls."""
    calls: list[dict] = []

    class Wrapper:
        _kv_layout = "NHD"

    def plan0(self, indptr, indices, last_page_len, *args, **kwargs):
        self._paged_kv_indptr_buf = indptr.clone()
        self._paged_kv_indices_buf = torch.cat([indices, torch.zeros(8, dtype=torch.int32)])
        self._paged_kv_last_page_len_buf = last_page_len.clone()

    def run0(self, q, kv, *args, **kwargs):
        calls.append(kwargs)
        return torch.zeros_like(q)

    plan, run = decode.wrap(plan0, run0)
    return Wrapper(), plan, run, calls


def _decode_inputs(batch: int = 3, per_seq: int = 5):
    g = torch.Generator().manual_seed(batch)
    pages = batch * per_seq
    q = torch.randn(batch, 32, 128, generator=g).bfloat16()
    k, v = torch.randn(2, pages, 1, 8, 128, generator=g).bfloat16()
    indptr = torch.arange(batch + 1, dtype=torch.int32) * per_seq
    indices = torch.randperm(pages, generator=g).to(torch.int32)
    return q, k, v, indptr, indices, torch.ones(batch, dtype=torch.int32)


def test_decode_run_is_routed_with_the_plan_state(tmp_path: Path):
    name = "gqa_paged_decode_h32_kv8_d128_ps1"
    session = fib.enable_apply(engine_db(tmp_path / "db", [name], variant="torch_padded"))
    fi.reset()
    try:
        wrapper, plan, run, calls = _stub_decode(tmp_path)
        q, k, v, indptr, indices, last = _decode_inputs()
        plan(wrapper, indptr, indices, last, 32, 8, 128, 1, q_data_type=torch.bfloat16)
        out = torch.zeros_like(q)
        assert run(wrapper, q, (k, v), out=out) is out
        namespace: dict = {}
        exec(load_catalogue_reference(name), namespace)
        want, _ = namespace["run"](q, k, v, indptr, indices, 128 ** -0.5)
        torch.testing.assert_close(out, want)
        torch.testing.assert_close(run(wrapper, q, (k, v)), want)
        assert calls == [] and fi.stats()["routed"] == {"decode.run": 2}
        # Uncovered: FlashInfer's run gets the call, unchanged, and it is counted.
        run(wrapper, q, (k, v), return_lse=True)
        assert calls == [{"out": None, "lse": None, "return_lse": True}]
        assert fi.stats()["unchanged"] == {"decode.run": {"return_lse": 1}}
        assert fib.stats()[name]["hits"] == 2
    finally:
        session.__exit__()


@pytest.mark.parametrize("legacy", [False, True])
def test_decode_plan_reaches_flashinfer_as_called_and_is_read_in_either_form(legacy: bool):
    """FlashInfer's plan gets the caller's arguments as given (options passed positionally
    would take its deprecation path, a warning per plan), and the adapter reads the options
    from either form."""
    seen: list = []

    class Wrapper:
        _kv_layout = "NHD"

    def plan0(self, *args, **kwargs):
        seen.append((args[7:], kwargs))
        self._paged_kv_indptr_buf = args[0]

    plan, _ = decode.wrap(plan0, lambda *args, **kwargs: None)
    _, _, _, indptr, indices, last = _decode_inputs()
    if legacy:
        options, keywords = ("ROPE_LLAMA", -1, None, torch.bfloat16), {}
    else:
        options, keywords = (), {"pos_encoding_mode": "ROPE_LLAMA", "q_data_type": torch.bfloat16}
    wrapper = Wrapper()
    plan(wrapper, indptr, indices, last, 32, 8, 128, 1, *options, **keywords)
    assert seen == [(options, keywords)]
    assert wrapper.__dict__[decode._STATE].reason == "pos_encoding"


def test_a_decode_run_left_to_flashinfer_by_dispatch_does_not_ask_it_for_lse(tmp_path: Path):
    """With nothing measured, the site's fallback runs FlashInfer's run as the engine called
    it: the adapter's scratch lse is not asked for (FlashInfer would compute it)."""
    name = "gqa_paged_decode_h32_kv8_d128_ps1"
    session = fib.enable_apply(engine_db(tmp_path / "db", [name], variant="torch_padded",
                                         batches=()))
    fi.reset()
    try:
        wrapper, plan, run, calls = _stub_decode(tmp_path)
        q, k, v, indptr, indices, last = _decode_inputs()
        plan(wrapper, indptr, indices, last, 32, 8, 128, 1, q_data_type=torch.bfloat16)
        out = torch.zeros_like(q)
        run(wrapper, q, (k, v), out=out)
        assert len(calls) == 1 and calls[0].keys() == {"out"} and calls[0]["out"] is out
        assert fib.stats()[name]["hits"] == 0
    finally:
        session.__exit__()


def test_with_fib_runtime_off_a_covered_call_reaches_flashinfer_directly():
    """Off, a covered call pays no site: once the site has started, FlashInfer's own
    function is called from the replacement itself, and nothing counts as routed."""
    fi.reset()
    fi.install()
    try:
        x, r, w = _tensors()
        for _ in range(2):  # the first call of a site starts it (the environment autostart)
            with pytest.raises((RuntimeError, AssertionError)) as raised:
                flashinfer.norm.fused_add_rmsnorm(x.clone(), r.clone(), w, 1e-5)
        frames = [str(entry.path) for entry in raised.traceback]
        assert any("site-packages/flashinfer/" in f for f in frames)
        assert not any("originals.py" in f or f.startswith("<fib") for f in frames), frames
    finally:
        fi.uninstall()


def load_catalogue_reference(name: str) -> str:
    from fib_runtime.catalogue import load_catalogue

    return load_catalogue().definitions[name].reference


# -- the engine's own path as a candidate ------------------------------------------------------

ORIGINALS = ("rmsnorm_h4096", "fused_add_rmsnorm_residual_h4096", "silu_and_mul_i14336",
             "gqa_paged_decode_h32_kv8_d128_ps1", "gqa_paged_decode_h32_kv8_d128_ps16")


@pytest.mark.parametrize("name", ORIGINALS)
def test_each_routed_op_has_an_importable_original(name: str):
    """What capture records for the adapter's call sites is a module-level function another
    process can import: retune times it (it is not "not timeable")."""
    from fib_runtime.adapters.flashinfer import originals

    from fib_runtime.catalogue import load_catalogue
    from fib_runtime.original import original_problem, original_solution, untimeable_reason

    fn = getattr(originals, name)
    assert fn is getattr(originals, name)  # made once, kept in the module
    assert original_problem(fn) is None
    solution = original_solution(load_catalogue().definitions[name], fn)
    assert untimeable_reason(solution) is None
    assert solution.name.endswith(f"fib_runtime.adapters.flashinfer.originals.{name}")
    with pytest.raises(AttributeError):
        getattr(originals, "not_a_definition_h1")  # noqa: B009


def test_capture_through_the_adapter_records_its_originals(tmp_path: Path):
    from fib_runtime.original import is_original, untimeable_reason
    from fib_runtime.store import TraceDB

    db = engine_db(tmp_path / "db")
    fi.reset()
    with fib.enable_capture(db):
        fi.install()
        try:
            x, _, w = _tensors()
            with pytest.raises((RuntimeError, AssertionError)):  # FlashInfer refuses CPU
                flashinfer.norm.rmsnorm(x, w, 1e-5)
        finally:
            fi.uninstall()
    recorded = {s.name.split("__original__")[1]: s
                for s in TraceDB.open(db.root).solutions_for("rmsnorm_h4096") if is_original(s)}
    # (other modules' sites of the definition in this process are recorded too)
    ours = recorded["fib_runtime.adapters.flashinfer.originals.rmsnorm_h4096"]
    assert untimeable_reason(ours) is None


def _original_first_db(root: Path, other_first_at: tuple[int, ...] = ()) -> TraceDB:
    """rmsnorm_h4096 with FlashInfer's own function measured fastest at batch 4, and the
    catalogue's torch solution fastest at the batches `other_first_at`."""
    from fib_runtime.adapters.flashinfer import originals

    from fib_runtime.catalogue import load_catalogue
    from fib_runtime.original import original_solution
    from fib_runtime.schema import Trace
    from tests.factories import trace

    db = engine_db(root, ["rmsnorm_h4096"], batches=other_first_at)
    solution = original_solution(load_catalogue().definitions["rmsnorm_h4096"],
                                 originals.rmsnorm_h4096)
    db.add_solution(solution)
    data = trace("rmsnorm_h4096", solution.name, 4, latency=0.001,
                 hardware=fib.current_hardware().name)
    data["workload"]["inputs"] = {"hidden_states": {"type": "random"},
                                  "weight": {"type": "random"}}
    data["workload"]["axes"] = {"batch_size": 4}
    db.append_traces([Trace.from_dict(data)])
    return db


def test_where_flashinfer_is_fastest_the_call_goes_to_flashinfer_itself(tmp_path: Path):
    """The original ranked first at every key: once the site has started (a first call in
    this process is a hit that calls FlashInfer's own function), the replacement calls
    FlashInfer itself, without the site and not counted as a hit (on the CPU its kernel
    refuses the tensors, which shows it was reached)."""
    from fib_runtime.adapters.flashinfer import originals

    db = _original_first_db(tmp_path / "db")
    session = fib.enable_apply(db.root, {"check_interval_s": 0})
    fi.reset()
    fi.install()
    try:
        name = fib.explain("rmsnorm_h4096", {"batch_size": 4}).decision
        assert name.startswith("rmsnorm_h4096__original__") and "originals" in name
        x, _, w = _tensors(4)
        hits = []
        for _ in range(2):
            with pytest.raises((RuntimeError, AssertionError)) as raised:
                flashinfer.norm.rmsnorm(x, w, 1e-5)
            assert any("site-packages/flashinfer/" in str(e.path) for e in raised.traceback)
            hits.append(fib.stats()["rmsnorm_h4096"]["hits"])
        frames = [str(entry.path) for entry in raised.traceback]
        assert not any("originals.py" in f or f.startswith("<fib") for f in frames), frames
        assert hits[0] == hits[1] <= 1 and not fib.stats()["rmsnorm_h4096"]["fallbacks"]
        assert originals.rmsnorm_h4096  # the candidate retune times stays importable
    finally:
        fi.uninstall()
        session.__exit__()


def test_where_another_solution_wins_some_key_every_call_goes_through_the_site(
        tmp_path: Path):
    db = _original_first_db(tmp_path / "db", other_first_at=(16,))
    session = fib.enable_apply(db.root, {"check_interval_s": 0})
    fi.reset()
    fi.install()
    try:
        x, w = torch.randn(16, H).bfloat16(), torch.randn(H).bfloat16()
        want = torch.nn.functional.rms_norm(x.float(), (H,), w.float(), 1e-5).bfloat16()
        for _ in range(2):
            torch.testing.assert_close(flashinfer.norm.rmsnorm(x, w, 1e-5), want)
        with pytest.raises((RuntimeError, AssertionError)):  # batch 4: FlashInfer's own
            flashinfer.norm.rmsnorm(x[:4], w, 1e-5)
        assert fib.stats()["rmsnorm_h4096"]["hits"] == 3
        assert fi.stats()["routed"] == {"rmsnorm": 3}
    finally:
        fi.uninstall()
        session.__exit__()


def test_a_routed_decode_run_allocates_no_scratch_per_call(tmp_path: Path):
    name = "gqa_paged_decode_h32_kv8_d128_ps1"
    session = fib.enable_apply(engine_db(tmp_path / "db", [name], variant="torch_padded"))
    fi.reset()
    try:
        wrapper, plan, run, _ = _stub_decode(tmp_path)
        q, k, v, indptr, indices, last = _decode_inputs()
        plan(wrapper, indptr, indices, last, 32, 8, 128, 1, q_data_type=torch.bfloat16)
        buffer = wrapper.__dict__[decode._LSE]
        out = torch.zeros_like(q)
        for _ in range(3):
            run(wrapper, q, (k, v), out=out)
        plan(wrapper, indptr, indices, last, 32, 8, 128, 1, q_data_type=torch.bfloat16)
        assert wrapper.__dict__[decode._LSE] is buffer  # same batch: the same scratch
        assert fi.stats()["routed"] == {"decode.run": 3}
    finally:
        session.__exit__()


def test_a_replan_reads_the_new_buffers_and_what_changed_options_decide(tmp_path: Path):
    """What a plan's arguments decide is remembered per wrapper, but every plan reads the
    buffers FlashInfer's plan just made, a changed option or batch decides anew, and the
    memo stays bounded."""
    name = "gqa_paged_decode_h32_kv8_d128_ps1"
    session = fib.enable_apply(engine_db(tmp_path / "db", [name], variant="torch_padded"))
    fi.reset()
    try:
        wrapper, plan, run, calls = _stub_decode(tmp_path)
        namespace: dict = {}
        exec(load_catalogue_reference(name), namespace)
        for batch, per_seq in ((3, 5), (3, 7)):  # same arguments, new index tensors
            q, k, v, indptr, indices, last = _decode_inputs(batch, per_seq)
            plan(wrapper, indptr, indices, last, 32, 8, 128, 1, q_data_type=torch.bfloat16)
            want, _ = namespace["run"](q, k, v, indptr, indices, 128 ** -0.5)
            torch.testing.assert_close(run(wrapper, q, (k, v)), want)
        assert len(wrapper.__dict__[decode._KNOWN]) == 1
        plan(wrapper, indptr, indices, last, 32, 8, 128, 1, q_data_type=torch.bfloat16,
             window_left=16)
        run(wrapper, q, (k, v))
        assert fi.stats()["unchanged"] == {"decode.run": {"window": 1}} and len(calls) == 1
        q, k, v, indptr, indices, last = _decode_inputs(5)
        plan(wrapper, indptr, indices, last, 32, 8, 128, 1, q_data_type=torch.bfloat16,
             sm_scale=0.5)
        want, _ = namespace["run"](q, k, v, indptr, indices, 0.5)
        torch.testing.assert_close(run(wrapper, q, (k, v)), want)
        assert wrapper.__dict__[decode._STATE].lse.shape == (5, 32)
        for batch in range(1, decode.KNOWN_PLANS + 2):
            _, _, _, indptr, indices, last = _decode_inputs(batch, 1)
            plan(wrapper, indptr, indices, last, 32, 8, 128, 1, q_data_type=torch.bfloat16)
        assert len(wrapper.__dict__[decode._KNOWN]) <= decode.KNOWN_PLANS
        assert fi.stats()["routed"] == {"decode.run": 3}
    finally:
        session.__exit__()
