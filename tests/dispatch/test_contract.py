"""A call is served by a solution only when the solution's contract covers it, as a user meets
it: another dtype after a bfloat16 call of the same shapes, strided and broadcast weights, a
training step, the return value of a destination-passing call. Everything else is answered by
the decorated function and counted under its reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fib_runtime as fib
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.store import TraceDB
from tests.dispatch.forced import forced_db, interpreted_triton  # noqa: F401 (fixture)
from tests.factories import definition, solution, trace

BF16 = torch.bfloat16


@fib.apply("rmsnorm_h128")
def rmsnorm(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    x = hidden_states.float()
    y = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6) * weight.float()
    return y.to(hidden_states.dtype)


@fib.apply("fused_add_rmsnorm_h2048")
def fused_add_rmsnorm(hidden_states: torch.Tensor, residual: torch.Tensor,
                      weight: torch.Tensor) -> torch.Tensor:
    x = hidden_states.float() + residual.float()
    y = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6) * weight.float()
    return y.to(hidden_states.dtype)


@fib.apply("fused_add_rmsnorm_residual_h2048")
def fused_add_rmsnorm_residual(hidden_states: torch.Tensor, residual: torch.Tensor,
                               weight: torch.Tensor, *out: torch.Tensor) -> object:
    x = hidden_states.float() + residual.float()
    y = (x * torch.rsqrt(x.square().mean(-1, keepdim=True) + 1e-6) * weight.float())
    result = y.to(hidden_states.dtype), x.to(residual.dtype)
    if not out:
        return result
    out[0].copy_(result[0])
    out[1].copy_(result[1])
    return out[0], out[1]


def _fallbacks(name: str) -> dict[str, int]:
    return fib.stats()[name]["fallbacks"]


def test_a_float32_call_after_a_bfloat16_call_of_the_same_shapes(tmp_path: Path) -> None:
    forced_db(tmp_path, ["rmsnorm_h128__torch"])
    x, w = torch.randn(4, 128), torch.randn(128)
    with fib.enable_apply(tmp_path):
        served = rmsnorm(x.to(BF16), w.to(BF16))
        assert fib.stats()["rmsnorm_h128"]["hits"] == 1
        for dtype in (torch.float32, torch.float16):
            got = rmsnorm(x.to(dtype), w.to(dtype))
            assert got.dtype == dtype  # a bfloat16 kernel would have returned bfloat16
            torch.testing.assert_close(got, rmsnorm.__wrapped__(x.to(dtype), w.to(dtype)))
        # A float32 weight beside bfloat16 activations, first seen at a new key: the whole
        # key is the original's.
        x5 = torch.randn(5, 128, dtype=BF16)
        assert torch.equal(rmsnorm(x5, w), rmsnorm.__wrapped__(x5, w))
        assert torch.equal(rmsnorm(x5, w.to(BF16)), rmsnorm.__wrapped__(x5, w.to(BF16)))
        assert _fallbacks("rmsnorm_h128") == {"dtype": 4}
    assert served.dtype == BF16


def test_float32_inputs_are_unchanged_after_the_call(tmp_path: Path) -> None:
    forced_db(tmp_path, ["fused_add_rmsnorm_h2048__torch"])
    x, residual, w = torch.randn(3, 2048), torch.randn(3, 2048), torch.randn(2048)
    before = x.clone(), residual.clone(), w.clone()
    with fib.enable_apply(tmp_path):
        got = fused_add_rmsnorm(x, residual, w)
        assert _fallbacks("fused_add_rmsnorm_h2048") == {"dtype": 1}
    for tensor, copy in zip((x, residual, w), before, strict=True):
        assert torch.equal(tensor, copy)
    torch.testing.assert_close(got, fused_add_rmsnorm.__wrapped__(*before))


# A kernel reads its arguments through pointers, as contiguous memory: this python stand-in
# does the same with as_strided, so a strided or broadcast argument gives a wrong answer.
POINTER_CODE = """import torch

def run(x, weight):
    rows, cols = x.shape
    x = torch.as_strided(x, (rows, cols), (cols, 1), x.storage_offset())
    w = torch.as_strided(weight, (cols,), (1,), weight.storage_offset())
    return x * w + 1
"""


def _pointer_db(root: Path) -> None:
    db = TraceDB.open(root, create=True)
    db.add_definition(Definition.from_dict(definition()))
    db.add_solution(Solution.from_dict(solution("pointer", code=POINTER_CODE)))
    db.append_traces([Trace.from_dict(trace(solution="pointer", batch=b,
                                            hardware=fib.current_hardware().name))
                      for b in (2, 4)])


@fib.apply("toy_norm_h8")
def toy(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * weight + 1


@pytest.mark.parametrize("layout", ["strided weight", "broadcast weight", "transposed x",
                                    "strided rows"])
def test_layouts_a_kernel_cannot_take_go_to_the_original(tmp_path: Path, layout: str) -> None:
    _pointer_db(tmp_path)
    x, w = torch.randn(4, 8), torch.randn(8)
    if layout == "strided weight":
        w = torch.randn(16)[::2]
    elif layout == "broadcast weight":
        w = torch.randn(1).expand(8)
    elif layout == "transposed x":
        x = torch.randn(8, 4).t()
    else:
        x = torch.randn(4, 16)[:, 3:11]
    with fib.enable_apply(tmp_path):
        assert torch.equal(toy(x.contiguous(), w.contiguous()), toy.__wrapped__(x, w))
        assert fib.stats()["toy_norm_h8"]["hits"] == 1  # the contiguous call is served
        assert torch.equal(toy(x, w), toy.__wrapped__(x, w))
        assert _fallbacks("toy_norm_h8") == {"layout": 1}


# A kernel reads a tensor's bytes as the dtype it was built for: this stand-in reads the
# weight's storage as the activations' dtype, as a pointer kernel would.
REINTERPRETING_CODE = """import torch

def run(x, weight):
    w = torch.empty(0, dtype=x.dtype)
    w.set_(weight.untyped_storage(), 0, weight.shape)
    return x * w + 1
"""


def test_a_weight_of_another_dtype_at_a_served_key_goes_to_the_original(tmp_path: Path) -> None:
    """The first call of a key decided it (float32, as retune measured); a later call of the
    key with a float64 weight must not reach a kernel that reads raw bytes (seen on the H100:
    FlashInfer's norms read a float32 weight as bfloat16)."""
    db = TraceDB.open(tmp_path, create=True)
    db.add_definition(Definition.from_dict(definition()))
    db.add_solution(Solution.from_dict(solution("bytes", code=REINTERPRETING_CODE)))
    db.append_traces([Trace.from_dict(trace(solution="bytes", batch=4,
                                            hardware=fib.current_hardware().name))])
    x, w = torch.randn(4, 8), torch.randn(8)
    with fib.enable_apply(tmp_path):
        assert torch.equal(toy(x, w), toy.__wrapped__(x, w))
        assert fib.stats()["toy_norm_h8"]["hits"] == 1
        wide = w.double()
        assert torch.equal(toy(x, wide), toy.__wrapped__(x, wide))
        assert _fallbacks("toy_norm_h8") == {"dtype": 1}


def _any_layout_db(root: Path) -> None:
    db = TraceDB.open(root, create=True)
    db.add_definition(Definition.from_dict(definition()))
    code = "import torch\n\nFIB_ANY_LAYOUT = True\n\n\ndef run(x, weight):\n" \
           "    return x * weight + 1\n"
    db.add_solution(Solution.from_dict(solution("strides", code=code)))
    db.append_traces([Trace.from_dict(trace(solution="strides", batch=b,
                                            hardware=fib.current_hardware().name))
                      for b in (2, 4)])


def test_a_solution_that_takes_any_layout_serves_every_layout(tmp_path: Path) -> None:
    """A solution whose module says FIB_ANY_LAYOUT = True is served strided and broadcast
    arguments as they come (no per-call layout test), and answers them right."""
    _any_layout_db(tmp_path)
    x, w = torch.randn(8, 4).t(), torch.randn(1).expand(8)
    with fib.enable_apply(tmp_path):
        assert torch.equal(toy(x, w), toy.__wrapped__(x, w))
        every_other = torch.randn(4, 16)[:, ::2]
        assert torch.equal(toy(every_other, w), toy.__wrapped__(every_other, w))
        stats = fib.stats()["toy_norm_h8"]
    assert stats["hits"] == 2 and stats["fallbacks"] == {}


def test_a_refused_call_is_counted_under_the_test_it_failed(tmp_path: Path) -> None:
    """A solution that takes any layout, called in grad mode with a transposed input that
    requires grad: refused for grad (its layout was never in question)."""
    _any_layout_db(tmp_path)
    w = torch.randn(8)
    x = torch.randn(8, 4).t().requires_grad_()
    with fib.enable_apply(tmp_path):
        torch.testing.assert_close(toy(x, w), toy.__wrapped__(x, w))
        assert _fallbacks("toy_norm_h8") == {"grad": 1}


def test_warmup_decides_a_key_in_both_grad_modes(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Grad mode is part of the key: fib.warmup decides both, so a warmed key first called
    while a CUDA graph is being recorded is served with or without torch.no_grad(); a key
    not warmed takes the original there."""
    from fib_runtime import cuda_graphs

    _any_layout_db(tmp_path)
    x, w = torch.randn(4, 8), torch.randn(8)
    with fib.enable_apply(tmp_path):
        fib.warmup(axes={"toy_norm_h8": [{"batch_size": 4}]})
        monkeypatch.setattr(cuda_graphs, "being_recorded", lambda: True)
        with torch.no_grad():
            assert torch.equal(toy(x, w), x * w + 1)
        assert torch.equal(toy(x, w), x * w + 1)
        toy(torch.randn(2, 8), w)
        stats = fib.stats()["toy_norm_h8"]
    assert stats["hits"] == 2 and stats["fallbacks"] == {"graph_capture": 1}


def _train_step(fn: object, x0: torch.Tensor, w0: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x0.clone().requires_grad_()
    w = torch.nn.Parameter(w0.clone())
    y = fn(x, w) + x  # a skip connection: the path that hid the dropped gradients
    y.float().square().sum().backward()
    return y.detach(), x.grad, w.grad


def test_a_training_step_gets_the_gradients_of_the_unpatched_function(tmp_path: Path) -> None:
    forced_db(tmp_path, ["rmsnorm_h128__torch"])
    x0, w0 = torch.randn(4, 128, dtype=BF16), torch.randn(128, dtype=BF16)
    expected = _train_step(rmsnorm.__wrapped__, x0, w0)
    with fib.enable_apply(tmp_path):
        got = _train_step(rmsnorm, x0, w0)
        fallbacks = dict(_fallbacks("rmsnorm_h128"))
        with torch.no_grad():  # inference is still served
            rmsnorm(x0.clone().requires_grad_(), w0)
        rmsnorm(x0, w0)  # grad mode on, nothing requires grad: served
        hits = fib.stats()["rmsnorm_h128"]["hits"]
    for g, e in zip(got, expected, strict=True):
        assert g is not None and torch.equal(g, e)
    assert fallbacks == {"grad": 1} and hits == 2


def test_a_compiled_training_step_gets_the_gradients_of_the_unpatched_function(
        tmp_path: Path) -> None:
    forced_db(tmp_path, ["rmsnorm_h128__torch"])
    x0, w0 = torch.randn(4, 128, dtype=BF16), torch.randn(128, dtype=BF16)
    expected = _train_step(rmsnorm.__wrapped__, x0, w0)
    with fib.enable_apply(tmp_path):
        compiled = torch.compile(lambda x, w: rmsnorm(x, w), backend="aot_eager",
                                 fullgraph=True)
        got = _train_step(compiled, x0, w0)
        with torch.no_grad():  # inference under compile is still the custom op
            compiled(x0, w0)
        hits = fib.stats()["rmsnorm_h128"]["hits"]
    for g, e in zip(got, expected, strict=True):
        assert g is not None
        torch.testing.assert_close(g, e)
    assert hits == 1


@pytest.mark.parametrize("variant", ["torch", "triton_rowwise"])
@pytest.mark.usefixtures("interpreted_triton")
def test_a_destination_passing_call_returns_what_the_original_returns(
        tmp_path: Path, variant: str) -> None:
    forced_db(tmp_path, [f"fused_add_rmsnorm_residual_h2048__{variant}"])
    x, residual, w = (torch.randn(2, 2048, dtype=BF16), torch.randn(2, 2048, dtype=BF16),
                      torch.randn(2048, dtype=BF16))
    out, residual_out = torch.empty_like(x), torch.empty_like(residual)
    expected = fused_add_rmsnorm_residual.__wrapped__(x, residual, w)
    with fib.enable_apply(tmp_path):
        got = fused_add_rmsnorm_residual(x, residual, w, out, residual_out)
        assert fib.stats()["fused_add_rmsnorm_residual_h2048"]["hits"] == 1, fib.stats()
    assert isinstance(got, tuple) and got[0] is out and got[1] is residual_out
    torch.testing.assert_close(out, expected[0], atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(residual_out, expected[1])


def test_a_destination_passing_call_of_one_output_returns_it(tmp_path: Path) -> None:
    forced_db(tmp_path, ["rmsnorm_h128__torch"])
    x, w = torch.randn(4, 128, dtype=BF16), torch.randn(128, dtype=BF16)
    out = torch.empty_like(x)
    with fib.enable_apply(tmp_path):
        assert rmsnorm(x, w, out) is out
        assert fib.stats()["rmsnorm_h128"]["hits"] == 1


def test_a_routed_hf_model_trains_with_the_unpatched_models_gradients(tmp_path: Path) -> None:
    """Norms and rope routed (the MLP fusion is the adapter's own matter), every routed
    definition served by its torch solution: a training step gets every parameter's gradient
    of the unpatched model, and the same model in eval under no_grad is served."""
    transformers = pytest.importorskip("transformers")
    import copy

    from fib_runtime.adapters.transformers import apply, remove

    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=40, intermediate_size=88, vocab_size=32,
                                      num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=1)
    model = transformers.LlamaForCausalLM(config).to(BF16).train()
    plain = copy.deepcopy(model)
    ids = torch.randint(0, 32, (2, 5))

    def step(m: torch.nn.Module) -> dict[str, torch.Tensor]:
        m.zero_grad()
        m(ids).logits.float().square().mean().backward()
        return {n: p.grad for n, p in m.named_parameters()}

    expected = step(plain)
    routing = apply(model, ops=["rmsnorm", "rope"], db=tmp_path / "db")
    try:
        names = [routing.routed[p] for p in ("model.norm", "model.rotary_emb")]
        generated = TraceDB.open(tmp_path / "db").definitions
        forced_db(tmp_path / "db", [f"{n}__torch" for n in names], batches=(10,),
                  definitions=[generated[n] for n in names])
        with fib.enable_apply(tmp_path / "db", {"check_interval_s": 0}):
            got = step(model)
            stats = fib.stats()
            with torch.no_grad():
                model.eval()(ids)
            served = fib.stats()
    finally:
        remove(model)
    missing = [n for n, g in got.items() if g is None]
    assert not missing and set(got) == set(expected)
    for name, grad in got.items():
        torch.testing.assert_close(grad, expected[name], msg=name)
    for name in names:
        # the adapter runs the module's own forward for calls autograd records (they never
        # reach dispatch); any that do are answered by the original, counted as "grad"
        assert stats.get(name, {}).get("hits", 0) == 0, stats
        assert served[name]["hits"] >= 1, served[name]
