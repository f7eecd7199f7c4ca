"""A Llama-3.1-8B decode layer written against FlashInfer's Python API, as an engine writes it:
the engine-style static choice (FlashInfer's norms, activation and paged decode, cuBLAS
GEMMs), with static buffers so that it replays from a CUDA graph.

With the FlashInfer adapter installed (`fib_runtime.adapters.flashinfer.install()`), its
norm, activation and decode calls go to fib-runtime's call sites, whose original is
FlashInfer's own function: with dispatch off the layer is exactly the static choice, with
dispatch on it runs the database's choices. So `fib verify` on this step compares the choices
with the engine-style static path, in the eager and the CUDA-graph regime:

    fib verify integration.flashinfer_decode_layer:gate_step --arg batch=1 --db DB

Needs a CUDA GPU and flashinfer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

H, INTER, QO, KV, D = 4096, 14336, 32, 8, 128
EPS = 1e-5
DEFINITIONS = ("rmsnorm_h4096", "fused_add_rmsnorm_residual_h4096", "silu_and_mul_i14336",
               "gqa_paged_decode_h32_kv8_d128_ps1")


class Layer:
    """Llama-3.1-8B decode layer on FlashInfer's API, static buffers for CUDA graphs
    (page size 1, `kv_len` pages per sequence)."""

    def __init__(self, batch: int, kv_len: int, device: str = "cuda") -> None:
        import flashinfer

        g = torch.Generator(device=device).manual_seed(batch)

        def rnd(*shape: int, scale: float = 1.0) -> torch.Tensor:
            return (torch.randn(*shape, generator=g, device=device) * scale).bfloat16()

        self.batch = batch
        self.w_in, self.w_post = rnd(H), rnd(H)
        self.qkv = rnd((QO + 2 * KV) * D, H, scale=H ** -0.5)
        self.o = rnd(H, QO * D, scale=(QO * D) ** -0.5)
        self.gate_up = rnd(2 * INTER, H, scale=H ** -0.5)
        self.down = rnd(H, INTER, scale=INTER ** -0.5)
        pages = batch * kv_len
        self.k_cache, self.v_cache = rnd(pages, 1, KV, D), rnd(pages, 1, KV, D)
        self.x0, self.r0 = rnd(batch, H), rnd(batch, H)
        self.x, self.residual = self.x0.clone(), self.r0.clone()
        self.attn = torch.empty(batch, QO, D, dtype=torch.bfloat16, device=device)
        self.act = torch.empty(batch, INTER, dtype=torch.bfloat16, device=device)
        indptr = torch.arange(batch + 1, dtype=torch.int32, device=device) * kv_len
        indices = torch.randperm(pages, generator=g, device=device).to(torch.int32)
        last = torch.ones(batch, dtype=torch.int32, device=device)
        workspace = torch.zeros(128 << 20, dtype=torch.uint8, device=device)
        self.wrapper = flashinfer.decode.BatchDecodeWithPagedKVCacheWrapper(
            workspace, "NHD", use_cuda_graph=True,
            paged_kv_indptr_buffer=torch.empty_like(indptr),
            paged_kv_indices_buffer=torch.empty(pages + 64, dtype=torch.int32, device=device),
            paged_kv_last_page_len_buffer=torch.empty_like(last))
        self.plan_args = (indptr, indices, last, QO, KV, D, 1)

    def plan(self) -> None:
        self.wrapper.plan(*self.plan_args, q_data_type=torch.bfloat16,
                          kv_data_type=torch.bfloat16)

    def reset(self) -> None:
        self.x.copy_(self.x0)
        self.residual.copy_(self.r0)

    def forward(self) -> torch.Tensor:
        import flashinfer

        flashinfer.norm.fused_add_rmsnorm(self.x, self.residual, self.w_in, EPS)
        q = (self.x @ self.qkv.t())[:, :QO * D].reshape(self.batch, QO, D)
        self.wrapper.run(q, (self.k_cache, self.v_cache), out=self.attn)
        h = self.attn.view(self.batch, QO * D) @ self.o.t()
        flashinfer.norm.fused_add_rmsnorm(h, self.residual, self.w_post, EPS)
        flashinfer.activation.silu_and_mul(h @ self.gate_up.t(), out=self.act)
        self.x.copy_(self.act @ self.down.t())
        return self.x


def op_axes(batch: int, kv_len: int) -> dict[str, dict[str, int]]:
    """The variable axes of each routed call of the layer, per definition."""
    rows = {"batch_size": batch}
    return {"rmsnorm_h4096": rows, "fused_add_rmsnorm_residual_h4096": rows,
            "silu_and_mul_i14336": {"num_tokens": batch},
            "gqa_paged_decode_h32_kv8_d128_ps1": {
                "batch_size": batch, "num_pages": batch * kv_len, "len_indptr": batch + 1,
                "num_kv_indices": batch * kv_len + 64}}


def gate_step(batch: int = 1, kv_len: int = 512) -> Callable[[], Any]:
    """The step `fib verify` times: one layer forward, the FlashInfer adapter installed and
    the wrapper planned (as an engine plans once per step, outside its graphs)."""
    from fib_runtime.adapters import flashinfer as fib_flashinfer

    fib_flashinfer.install()
    layer = Layer(batch, kv_len)
    layer.plan()
    layer.reset()
    return layer.forward
