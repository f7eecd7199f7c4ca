"""One Llama-3.1-8B decoder layer, batched decode over a paged KV cache, through the whole loop.

The layer is written as an engine would write it: every op is a plain-PyTorch function
marked with `@fib.apply(<definition>)`, and the glue between them (dtype conversions, RoPE,
the KV-cache write, the residual adds) stays plain torch. The GEMM definitions are float16
and the others bfloat16, so activations are converted at the GEMM boundaries.

`main()` installs the catalogue into a database, runs the layer over the batch sizes with
capture on, retunes the captured definitions on this machine, then times the whole layer
with dispatch off (the original code) and on, checks that both give the same output, and
prints which solution served each op. Weights and inputs are random (nothing is downloaded).

    python3 integration/llama_decode_layer.py --device cuda --batches 1,8,64 --iters 20
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import fib_runtime as fib
from fib_runtime.catalogue import install
from fib_runtime.hardware import current_hardware
from fib_runtime.measure.timing import median_latency_ms
from fib_runtime.render import render_table
from fib_runtime.retuning import retune
from fib_runtime.store import TraceDB

HIDDEN, INTERMEDIATE = 4096, 14336
NUM_HEADS, NUM_KV_HEADS, HEAD_DIM = 32, 8, 128
GROUP = NUM_HEADS // NUM_KV_HEADS
Q_SIZE, KV_SIZE = NUM_HEADS * HEAD_DIM, NUM_KV_HEADS * HEAD_DIM
ROPE_THETA = 500_000.0
SM_SCALE = 1.0 / math.sqrt(HEAD_DIM)
# Largest difference allowed between the dispatched and the original layer output (bf16).
ATOL = RTOL = 2e-2
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"

# The layer's ops in call order: (role in the layer, definition).
LAYER_OPS = (
    ("input_layernorm", "rmsnorm_h4096"),
    ("qkv_proj", "gemm_n6144_k4096"),
    ("attention", "gqa_paged_decode_h32_kv8_d128_ps1"),
    ("o_proj", "gemm_n4096_k4096"),
    ("post_attention_layernorm", "fused_add_rmsnorm_h4096"),
    ("gate_up_proj", "gemm_n28672_k4096"),
    ("silu_and_mul", "silu_and_mul_i14336"),
    ("down_proj", "gemm_n4096_k14336"),
)
DEFINITIONS = [definition for _, definition in LAYER_OPS]


# -- the engine's ops: plain PyTorch, each marked with its definition -------------------------

def _rms_normalise(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """RMSNorm of float32 rows (eps 1e-5), scaled by `weight`; stays float32."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()


@fib.apply("rmsnorm_h4096")
def rmsnorm(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _rms_normalise(hidden_states.float(), weight).to(hidden_states.dtype)


@fib.apply("fused_add_rmsnorm_h4096")
def fused_add_rmsnorm(hidden_states: torch.Tensor, residual: torch.Tensor,
                      weight: torch.Tensor) -> torch.Tensor:
    x = hidden_states.float() + residual.float()
    return _rms_normalise(x, weight).to(hidden_states.dtype)


@fib.apply("silu_and_mul_i14336")
def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.float().chunk(2, dim=-1)
    return (torch.nn.functional.silu(gate) * up).to(gate_up.dtype)


def _linear(definition: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A projection `A @ B^T` (B in nn.Linear layout) marked with its GEMM definition."""
    @fib.apply(definition)
    def linear(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return A @ B.T
    return linear


qkv_proj = _linear("gemm_n6144_k4096")
o_proj = _linear("gemm_n4096_k4096")
gate_up_proj = _linear("gemm_n28672_k4096")
down_proj = _linear("gemm_n4096_k14336")


@fib.apply("gqa_paged_decode_h32_kv8_d128_ps1")
def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           kv_indptr: torch.Tensor, kv_indices: torch.Tensor,
                           sm_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sequence's pages gathered into a padded [batch, longest] block, float32 math;
    returns the output and the base-2 log-sum-exp (zero and -inf for an empty sequence)."""
    batch = q.shape[0]
    lengths = (kv_indptr[1:] - kv_indptr[:-1]).long()
    longest = int(lengths.max()) if batch else 0
    slots = torch.arange(longest, device=q.device)
    valid = slots[None, :] < lengths[:, None]
    positions = (kv_indptr[:-1, None].long() + slots[None, :]).clamp(
        max=max(kv_indices.numel() - 1, 0))
    pages = kv_indices[positions].long()
    keys, values = k_cache[pages, 0].float(), v_cache[pages, 0].float()  # [b, t, kv, d]
    queries = q.float().view(batch, NUM_KV_HEADS, GROUP, HEAD_DIM)
    logits = torch.einsum("bkgd,btkd->bkgt", queries, keys) * sm_scale
    logits = logits.masked_fill(~valid[:, None, None, :], -math.inf)
    lse = torch.logsumexp(logits, dim=-1) / math.log(2.0)
    weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)
    output = torch.einsum("bkgt,btkd->bkgd", weights, values)
    return (output.reshape(batch, NUM_HEADS, HEAD_DIM).to(q.dtype),
            lse.reshape(batch, NUM_HEADS))


def apply_rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (rotate-half form) on [batch, heads, head_dim], float32."""
    half = HEAD_DIM // 2
    exponents = torch.arange(half, device=x.device, dtype=torch.float32) / half
    angles = positions.float()[:, None] * ROPE_THETA ** -exponents
    cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


# -- weights, a decode batch, and the layer -------------------------------------------------

@dataclass(frozen=True)
class LayerWeights:
    input_norm: torch.Tensor  # [hidden] bf16
    qkv: torch.Tensor  # [q + 2 kv, hidden] fp16
    o: torch.Tensor  # [hidden, q] fp16
    post_norm: torch.Tensor  # [hidden] bf16
    gate_up: torch.Tensor  # [2 intermediate, hidden] fp16
    down: torch.Tensor  # [hidden, intermediate] fp16


def random_weights(device: str, seed: int = 0) -> LayerWeights:
    """Random weights with a 1/sqrt(fan-in) scale, so activations stay O(1) through the layer."""
    torch.manual_seed(seed)

    def linear(n: int, k: int) -> torch.Tensor:
        return torch.randn(n, k, device=device, dtype=torch.float16).mul_(k ** -0.5)

    def norm() -> torch.Tensor:
        return (1.0 + 0.1 * torch.randn(HIDDEN, device=device)).to(torch.bfloat16)

    return LayerWeights(norm(), linear(Q_SIZE + 2 * KV_SIZE, HIDDEN), linear(HIDDEN, Q_SIZE),
                        norm(), linear(2 * INTERMEDIATE, HIDDEN), linear(HIDDEN, INTERMEDIATE))


@dataclass(frozen=True)
class DecodeBatch:
    """One decode step: a token per sequence, each sequence holding `kv_len` pages of the
    cache (its last page is the slot of the new token)."""

    hidden: torch.Tensor  # [batch, hidden] bf16
    positions: torch.Tensor  # [batch] int64, the new token's position
    k_cache: torch.Tensor  # [pages, 1, kv heads, head_dim] bf16
    v_cache: torch.Tensor
    kv_indptr: torch.Tensor  # [batch + 1] int32
    kv_indices: torch.Tensor  # [batch * kv_len] int32
    new_pages: torch.Tensor  # [batch] int64, where the new token's K and V are written


def make_batch(batch_size: int, kv_len: int, device: str, seed: int = 1) -> DecodeBatch:
    """Random activations and cache; the sequences' pages are scattered over a pool a quarter
    larger than they need, as in an engine's page allocator."""
    torch.manual_seed(seed)
    num_pages = batch_size * kv_len + batch_size * kv_len // 4 + 16
    cache_shape = (num_pages, 1, NUM_KV_HEADS, HEAD_DIM)
    kv_indices = torch.randperm(num_pages, device=device)[:batch_size * kv_len].to(torch.int32)
    kv_indptr = torch.arange(batch_size + 1, device=device, dtype=torch.int32) * kv_len
    return DecodeBatch(
        hidden=torch.randn(batch_size, HIDDEN, device=device, dtype=torch.bfloat16),
        positions=torch.full((batch_size,), kv_len - 1, device=device, dtype=torch.int64),
        k_cache=torch.randn(cache_shape, device=device, dtype=torch.bfloat16),
        v_cache=torch.randn(cache_shape, device=device, dtype=torch.bfloat16),
        kv_indptr=kv_indptr, kv_indices=kv_indices,
        new_pages=kv_indices[kv_indptr[1:].long() - 1].long())


def decode_layer(w: LayerWeights, b: DecodeBatch) -> torch.Tensor:
    """The layer's output hidden states [batch, hidden] (bf16); writes the new K and V."""
    n = b.hidden.shape[0]
    residual = b.hidden
    x = rmsnorm(residual, w.input_norm)
    qkv = qkv_proj(x.to(torch.float16), w.qkv).to(torch.bfloat16)
    q, k, v = qkv.split((Q_SIZE, KV_SIZE, KV_SIZE), dim=-1)
    q = apply_rope(q.view(n, NUM_HEADS, HEAD_DIM), b.positions)
    b.k_cache[b.new_pages, 0] = apply_rope(k.view(n, NUM_KV_HEADS, HEAD_DIM), b.positions)
    b.v_cache[b.new_pages, 0] = v.view(n, NUM_KV_HEADS, HEAD_DIM)
    attn, _lse = paged_decode_attention(q, b.k_cache, b.v_cache, b.kv_indptr, b.kv_indices,
                                        SM_SCALE)
    o = o_proj(attn.reshape(n, Q_SIZE).to(torch.float16), w.o).to(torch.bfloat16)
    x = fused_add_rmsnorm(o, residual, w.post_norm)
    residual = o + residual  # the definition returns only the norm: the sum is ours
    gate_up = gate_up_proj(x.to(torch.float16), w.gate_up).to(torch.bfloat16)
    act = silu_and_mul(gate_up)
    down = down_proj(act.to(torch.float16), w.down).to(torch.bfloat16)
    return residual + down


def op_axes(b: DecodeBatch) -> dict[str, dict[str, int]]:
    """The variable axes of each op's call in `decode_layer(_, b)`, per definition."""
    n = b.hidden.shape[0]
    rows = {"batch_size": n}
    axes = {name: {"M": n} for name in DEFINITIONS if name.startswith("gemm_")}
    axes.update({
        "rmsnorm_h4096": rows, "fused_add_rmsnorm_h4096": rows,
        "silu_and_mul_i14336": {"num_tokens": n},
        "gqa_paged_decode_h32_kv8_d128_ps1": {
            "batch_size": n, "num_pages": b.k_cache.shape[0], "len_indptr": n + 1,
            "num_kv_indices": b.kv_indices.shape[0]},
    })
    return axes


def gate_step(batch: int = 1, kv_len: int = 512, device: str | None = None
              ) -> Callable[[], torch.Tensor]:
    """The step `fib verify integration.llama_decode_layer:gate_step --arg batch=1` times:
    one layer over a fixed decode batch (eager: the original attention reads the longest
    sequence on the host, so the step cannot be captured in a CUDA graph)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    weights = random_weights(device)
    decode_batch = make_batch(batch, kv_len, device, seed=batch)

    def step() -> torch.Tensor:
        with torch.no_grad():
            return decode_layer(weights, decode_batch)

    return step


# -- the loop: capture -> retune -> dispatch -------------------------------------------------

@dataclass(frozen=True)
class Row:
    batch: int
    original_ms: float
    dispatched_ms: float
    max_abs_error: float
    matches: bool
    served: dict[str, str]  # role -> solution (or "fallback")
    reasons: dict[str, str]  # role -> why


def run_loop(db_path: Path, batches: Sequence[int], *, kv_len: int, device: str, iters: int,
             progress: bool = True) -> dict[str, Any]:
    """Capture, retune and serve the layer on `db_path`; the measurements as a dict."""
    weights = random_weights(device)
    inputs = {n: make_batch(n, kv_len, device, seed=n) for n in batches}
    db = TraceDB.open(db_path, create=True)
    install(db)
    phases: dict[str, float] = {}
    with torch.no_grad():
        start = time.perf_counter()
        with fib.enable_capture(db):
            for b in inputs.values():
                decode_layer(weights, b)
        phases["capture_s"] = time.perf_counter() - start
        start = time.perf_counter()
        summary = retune(db_path, definitions=DEFINITIONS, devices=_retune_devices(device),
                         warmup=3, iters=iters, progress=progress)
        phases["retune_s"] = time.perf_counter() - start
        start = time.perf_counter()
        originals = {n: _time_layer(weights, b, device, iters) for n, b in inputs.items()}
        with fib.enable_apply(db_path, {"check_interval_s": 0}):
            rows = [_serve(weights, inputs[n], originals[n], device, iters) for n in batches]
            stats = fib.stats()
        phases["serve_s"] = time.perf_counter() - start
    hardware = current_hardware()
    return {
        "hardware": hardware.name, "hardware_key": hardware.key, "torch": torch.__version__,
        "device": device, "kv_len": kv_len, "iters": iters, "db": str(db_path),
        "tolerance": {"atol": ATOL, "rtol": RTOL}, "phases": phases,
        "retune": {"counts": summary.counts(), "skipped": summary.skipped,
                   "unusable": len(summary.unusable), "table": summary.table()},
        "rows": [vars(row) for row in rows],
        "dispatch_stats": {name: stats.get(name, {}) for name in DEFINITIONS},
    }


def _retune_devices(device: str) -> str | None:
    return "cpu" if device == "cpu" else device.partition(":")[2] or None


def _time_layer(weights: LayerWeights, b: DecodeBatch, device: str,
                iters: int) -> tuple[torch.Tensor, float]:
    """The layer's output and its median latency in ms (CUDA events on GPU)."""
    output = decode_layer(weights, b)
    return output, median_latency_ms(decode_layer, [weights, b], device=device, warmup=3,
                                     iters=iters)


def _serve(weights: LayerWeights, b: DecodeBatch, original: tuple[torch.Tensor, float],
           device: str, iters: int) -> Row:
    expected, original_ms = original
    output, dispatched_ms = _time_layer(weights, b, device, iters)
    explained = {definition: fib.explain(definition, axes)
                 for definition, axes in op_axes(b).items()}
    error = (output.float() - expected.float()).abs().max().item()
    return Row(batch=b.hidden.shape[0], original_ms=original_ms, dispatched_ms=dispatched_ms,
               max_abs_error=error,
               matches=torch.allclose(output.float(), expected.float(), atol=ATOL, rtol=RTOL),
               served={role: explained[d].decision for role, d in LAYER_OPS},
               reasons={role: explained[d].reason for role, d in LAYER_OPS})


def format_results(results: dict[str, Any]) -> str:
    """The timing table, then which solution served each op at each batch size."""
    rows = results["rows"]
    timing = [["batch", "original ms", "dispatched ms", "speedup", "max |err|", "match"]]
    timing += [[str(r["batch"]), f"{r['original_ms']:.3f}", f"{r['dispatched_ms']:.3f}",
                f"{r['original_ms'] / r['dispatched_ms']:.2f}x", f"{r['max_abs_error']:.2e}",
                "yes" if r["matches"] else "NO"] for r in rows]
    served = [["op", "definition", *(f"batch {r['batch']}" for r in rows)]]
    served += [[role, definition,
                *(_short(r["served"][role], r["reasons"][role]) for r in rows)]
               for role, definition in LAYER_OPS]
    return (f"{render_table(timing[0], timing[1:])}\n\nserved by (on {results['hardware']}):\n"
            f"{render_table(served[0], served[1:])}")


def _short(solution: str, reason: str) -> str:
    name = solution.split("__")[-1]
    return name if reason == "measured" else f"{name} ({reason})"


def main(argv: Sequence[str] | None = None) -> int:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, default=None,
                        help="database folder (default: a new temporary folder)")
    parser.add_argument("--device", default="cuda" if cuda else "cpu",
                        help="cuda, cuda:N or cpu (default: cuda when available)")
    parser.add_argument("--batches", default=None,
                        help="comma-separated batch sizes (default: 1,8,32,128 on GPU, 1,2 on "
                             "CPU)")
    parser.add_argument("--kv-len", type=int, default=512, help="KV pages per sequence")
    parser.add_argument("--iters", type=int, default=None,
                        help="timed runs per measurement (default: 20 on GPU, 3 on CPU)")
    parser.add_argument("--json", type=Path, default=None,
                        help="result file (default: benchmarks/results/"
                             "integration_llama_layer_<hardware key>.json)")
    args = parser.parse_args(argv)
    on_gpu = args.device.startswith("cuda")
    if on_gpu and not cuda:
        parser.error("--device cuda: no CUDA device here (use --device cpu)")
    if not on_gpu and cuda:  # dispatch selects by this machine's GPU, not by the tensors
        parser.error("--device cpu on a machine with a GPU: hide it (CUDA_VISIBLE_DEVICES=)")
    batches = [int(v) for v in (args.batches or ("1,8,32,128" if on_gpu else "1,2")).split(",")]
    if args.kv_len < 1 or min(batches) < 1:
        parser.error("--batches and --kv-len must be positive")
    db_path = args.db or Path(tempfile.mkdtemp(prefix="fib-llama-layer-"))
    results = run_loop(db_path, batches, kv_len=args.kv_len, device=args.device,
                       iters=args.iters or (20 if on_gpu else 3))
    print(format_results(results))
    phases = results["phases"]
    print(f"\ncapture {phases['capture_s']:.1f} s, retune {phases['retune_s']:.1f} s "
          f"({results['retune']['counts']}), serve {phases['serve_s']:.1f} s; db {db_path}")
    path = args.json or RESULTS / f"integration_llama_layer_{results['hardware_key'].lower()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")
    return 0 if all(r["matches"] for r in results["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
