"""Engine-contract definitions: fused_add_rmsnorm_residual_h* (normalised output and new
residual from one kernel, callable in place) and the page-size-16 decode definitions.

CPU: references against the official fused_add_rmsnorm_h* and against vLLM's / SGLang's
formula; the torch solution against the reference; the Triton solution in the interpreter,
destination-passing with its outputs aliasing its inputs (the engines' in-place call).
GPU (marked): the Triton solution in place on batch sizes 1 to 4097.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from fib_runtime.catalogue import declared_entries, entry_functions, load_catalogue

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "definitions" / "fused_add_rmsnorm"
OFFICIAL = REPO.parent / "shared" / "flashinfer-trace" / "definitions"
DEFINITIONS = {p.stem: json.loads(p.read_text()) for p in FOLDER.glob("*.json")}
CUDA = torch.cuda.is_available()


def _run_reference(name: str, *args: torch.Tensor):
    namespace: dict = {}
    exec(compile(DEFINITIONS.get(name, {}).get("reference") or _official(name)["reference"],
                 name, "exec"), namespace)
    return namespace["run"](*args)


def _official(name: str) -> dict:
    return json.loads(next(OFFICIAL.glob(f"*/{name}.json")).read_text())


def _import(stem: str) -> ModuleType:
    path = FOLDER / "solutions" / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"engine_defs_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _inputs(hidden: int, rows: int, device: str = "cpu", scale: float = 1.0):
    g = torch.Generator(device="cpu").manual_seed(rows + hidden)
    x, r = (torch.randn(2, rows, hidden, generator=g) * scale).bfloat16().to(device)
    return x, r, torch.randn(hidden, generator=g).bfloat16().to(device)


def _eps(name: str) -> float:
    return 1e-5 if name.endswith("h4096") else 1e-6


def test_every_fused_size_has_an_engine_definition_in_the_catalogue():
    official = {p.stem.removeprefix("fused_add_rmsnorm_h") for p in
                (REPO / "definitions" / "rmsnorm").glob("fused_add_rmsnorm_h*.json")}
    assert {n.removeprefix("fused_add_rmsnorm_residual_h") for n in DEFINITIONS} == official
    catalogue = load_catalogue()
    for name in DEFINITIONS:
        assert {s.name for s in catalogue.solutions if s.definition == name} == {
            f"{name}__torch", f"{name}__triton_rowwise",
            *(f"{name}__triton_multirow_{tile}" for tile in ("t1k", "t4k", "t16k"))}


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_reference_is_the_official_output_plus_the_rounded_sum(name: str):
    hidden = DEFINITIONS[name]["axes"]["hidden_size"]["value"]
    official = name.replace("_residual", "")
    for scale in (1.0, 1e-3):  # tiny inputs: eps dominates, so a wrong eps shows
        x, r, w = _inputs(hidden, 5, scale=scale)
        out, res = _run_reference(name, x, r, w)
        if OFFICIAL.is_dir():
            torch.testing.assert_close(out, _run_reference(official, x, r, w), rtol=0, atol=0)
        assert torch.equal(res, (x.float() + r.float()).bfloat16())
        # SGLang's forward_native formula (float32 sum, weight applied in float32).
        s = x.float() + r.float()
        want = (s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + _eps(name)) * w.float())
        torch.testing.assert_close(out, want.bfloat16(), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_torch_solution_matches_the_reference(name: str):
    module = _import("torch_native")
    entry = declared_entries(FOLDER / "solutions" / "torch_native.py")[0]
    fn = getattr(module, entry_functions(entry, DEFINITIONS)[name])
    hidden = DEFINITIONS[name]["axes"]["hidden_size"]["value"]
    for rows, scale in ((1, 1.0), (19, 1.0), (5, 1e-3)):
        x, r, w = _inputs(hidden, rows, scale=scale)
        before = (x.clone(), r.clone())
        out, res = fn(x, r, w)
        want_out, want_res = _run_reference(name, x, r, w)
        torch.testing.assert_close(out, want_out, rtol=1.6e-2, atol=1.6e-2)
        assert torch.equal(res, want_res)
        assert torch.equal(x, before[0]) and torch.equal(r, before[1])


def _same_residual(got: torch.Tensor, want: torch.Tensor) -> None:
    """Bit-exact on a GPU; the interpreter rounds float32 -> bfloat16 toward zero, so one
    bfloat16 ulp apart there."""
    if got.is_cuda:
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want, rtol=2 ** -7, atol=0)


def _check_triton_in_place(name: str, rows: int, device: str) -> None:
    module = _import("triton_rowwise")
    entry = declared_entries(FOLDER / "solutions" / "triton_rowwise.py")[0]
    fn = getattr(module, entry_functions(entry, DEFINITIONS)[name])
    hidden = DEFINITIONS[name]["axes"]["hidden_size"]["value"]
    x, r, w = _inputs(hidden, rows, device)
    want_out, want_res = _run_reference(name, x, r, w)
    # Separate outputs.
    out, res = torch.empty_like(x), torch.empty_like(r)
    assert fn(x, r, w, out, res) is None
    torch.testing.assert_close(out, want_out, rtol=1.6e-2, atol=1.6e-2)
    _same_residual(res, want_res)
    # In place, as SGLang's forward_cuda and flashinfer.norm.fused_add_rmsnorm call it.
    fn(x, r, w, x, r)
    torch.testing.assert_close(x, want_out, rtol=1.6e-2, atol=1.6e-2)
    _same_residual(r, want_res)


@pytest.mark.parametrize("name", ["fused_add_rmsnorm_residual_h4096",
                                  "fused_add_rmsnorm_residual_h2048"])
def test_triton_solution_in_place_in_the_interpreter(name: str):
    if CUDA:
        pytest.skip("the interpreter runs only without CUDA; the GPU test covers it")
    _check_triton_in_place(name, 3, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_triton_solution_in_place_on_gpu(name: str):
    for rows in (1, 7, 33, 255, 4097):
        _check_triton_in_place(name, rows, "cuda")


PS16 = sorted((REPO / "definitions" / "gqa_paged").glob("*decode*_ps16.json"))


@pytest.mark.parametrize("path", PS16, ids=lambda p: p.stem)
def test_page_size_16_decode_reference_agrees_with_page_size_1(path: Path):
    """The same tokens laid out in 16-token pages and in 1-token pages attend alike."""
    ps16 = json.loads(path.read_text())
    ps1 = json.loads(path.with_name(path.name.replace("_ps16", "_ps1")).read_text())
    kv = ps16["axes"]["num_kv_heads"]["value"]
    lengths = [1, 16, 17, 40, 0]
    g = torch.Generator().manual_seed(kv)
    q = torch.randn(len(lengths), 32, 128, generator=g).bfloat16()
    tokens = sum(lengths)
    k = torch.randn(tokens, kv, 128, generator=g).bfloat16()
    v = torch.randn(tokens, kv, 128, generator=g).bfloat16()
    # ps1: token t lives in page t.
    indptr1 = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    indices1 = torch.arange(tokens, dtype=torch.int32)
    # ps16: each sequence's tokens in its own pages, in a shuffled page pool, plus an
    # oversized indices buffer (CUDA graphs).
    pages, indptr16, last, pool = [], [0], [], 0
    for n in lengths:
        count = -(-n // 16)
        pages.append(list(range(pool, pool + count)))
        pool += count
        indptr16.append(indptr16[-1] + count)
        last.append(n - 16 * (count - 1) if count else 0)
    perm = torch.randperm(pool, generator=g)
    k16 = torch.zeros(pool, 16, kv, 128).bfloat16()
    v16 = torch.zeros_like(k16)
    start = 0
    for n, seq_pages in zip(lengths, pages, strict=True):
        for i, p in enumerate(seq_pages):
            take = min(16, n - 16 * i)
            k16[perm[p], :take] = k[start + 16 * i:start + 16 * i + take]
            v16[perm[p], :take] = v[start + 16 * i:start + 16 * i + take]
        start += n
    indices16 = torch.tensor([int(perm[p]) for s in pages for p in s] + [0, 0, 0],
                             dtype=torch.int32)
    scale = 128 ** -0.5

    def run(definition: dict, *args):
        namespace: dict = {}
        exec(compile(definition["reference"], definition["name"], "exec"), namespace)
        return namespace["run"](*args)

    out1, lse1 = run(ps1, q, k[:, None], v[:, None], indptr1, indices1, scale)
    out16, lse16 = run(ps16, q, k16, v16, torch.tensor(indptr16, dtype=torch.int32),
                       indices16, torch.tensor(last, dtype=torch.int32), scale)
    torch.testing.assert_close(out16, out1)
    torch.testing.assert_close(lse16, lse1)
    assert torch.isinf(lse16[-1]).all() and not out16[-1].any()
