"""Definition families: templates that write a Definition for any model's constants.

The catalogue ships definitions for a few models' shapes. A family (rmsnorm,
fused_add_rmsnorm, silu_and_mul, gemm, rope) turns constants such as a hidden size and an
eps into a Definition with the official naming scheme (`rmsnorm_h2560`,
`silu_and_mul_i9728`, `gemm_n2560_k9728`, `rope_with_cos_sin_cache_neox_style_d128_rd128`);
an eps that differs from the official one for that name goes into the name
(`rmsnorm_h4096_eps1e-6`). Generated definitions carry the tag `family:<name>`, so the
catalogue's solutions that declare the family serve them (see `fib_runtime.catalogue`).

Every family comes in bfloat16, float16 and float32. A name without a dtype suffix is in
its family's official dtype (float16 for gemm, as the official data has it; bfloat16 for
the others); any other dtype is the last part of the name (`rmsnorm_h4096_fp16`,
`rmsnorm_h2560_eps1e-5_fp32`, `gemm_n4096_k4096_bf16`): the same axes, constants and
reference, with every tensor of the official dtype in the variant's dtype. The catalogue
holds these variants of every shipped definition of VARIED_OP_TYPES.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fib_runtime.errors import SchemaError
from fib_runtime.schema import Definition

FAMILY_TAG = "family:"
# The eps of every official rmsnorm definition except Llama-3.1-8B's h4096 (1e-5): the eps a
# generated name without an `_eps` suffix stands for.
DEFAULT_EPS = 1e-6
_EPS_IN_REFERENCE = re.compile(r"^\s*EPS\s*=\s*([0-9.eE+-]+)\s*$", re.MULTILINE)
# The dtypes every family comes in, and the suffix a name takes for a dtype other than its
# family's official one.
DTYPE_SUFFIXES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
_SUFFIXED = {f"_{suffix}": dtype for dtype, suffix in DTYPE_SUFFIXES.items()}
# Op types whose shipped definitions the catalogue also holds in the other dtypes.
VARIED_OP_TYPES = frozenset({"rmsnorm", "fused_add_rmsnorm", "activation", "gemm", "rope"})


@dataclass(frozen=True)
class Family:
    """A template: `pattern` makes the definition name, `build` the definition's JSON dict."""

    name: str
    op_type: str
    scheme: str  # the naming scheme, for `fib catalogue ls`
    constants: tuple[str, ...]
    pattern: str  # the name at the official eps and dtype: pattern.format(**constants)
    build: Callable[..., dict[str, Any]]  # the definition in the official dtype
    dtype: str = "bfloat16"  # the official dtype: names without a dtype suffix


def eps_label(eps: float) -> str:
    """1e-05 -> '1e-5', 3e-06 -> '3e-6', 0.0001 -> '1e-4'."""
    mantissa, exponent = f"{eps:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def eps_of(definition: Definition) -> float | None:
    """The eps a norm definition's reference uses (`EPS = ...`), None if it has none."""
    match = _EPS_IN_REFERENCE.search(definition.reference)
    return float(match.group(1)) if match else None


def family_of(definition: Definition) -> str | None:
    for tag in definition.tags or ():
        if tag.startswith(FAMILY_TAG):
            return tag[len(FAMILY_TAG):]
    return None


def split_dtype(name: str) -> tuple[str, str | None]:
    """('rmsnorm_h4096', 'float16') for 'rmsnorm_h4096_fp16'; (name, None) for a name in its
    official dtype."""
    for suffix, dtype in _SUFFIXED.items():
        if name.endswith(suffix):
            return name[:-len(suffix)], dtype
    return name, None


def dtype_name(name: str, dtype: str, official: str = "bfloat16") -> str:
    """The name of `name`'s `dtype` variant (`name` itself for the official dtype)."""
    if dtype not in DTYPE_SUFFIXES:
        raise SchemaError(f"no definitions in {dtype} (known: {', '.join(DTYPE_SUFFIXES)})")
    return name if dtype == official else f"{name}_{DTYPE_SUFFIXES[dtype]}"


def dtype_of(definition: Definition) -> str:
    """The dtype a definition computes in: its first output's."""
    return next(iter(definition.outputs.values())).dtype


def with_dtype(definition: Definition, dtype: str) -> Definition:
    """The `dtype` variant of a definition in its official dtype (itself for that dtype)."""
    official = dtype_of(definition)
    if dtype == official:
        return definition
    data = definition.to_dict()
    for specs in (data["inputs"], data["outputs"]):
        for spec in specs.values():
            if spec["dtype"] == official:
                spec["dtype"] = dtype
    data["name"] = dtype_name(definition.name, dtype, official)
    data["description"] = (f"The {dtype} variant of {definition.name}: the same computation "
                           f"with every {official} tensor in {dtype}. "
                           f"{definition.description or ''}").strip()
    return Definition.from_dict(data)


def dtype_variants(definition: Definition) -> list[Definition]:
    """A shipped definition's variants in the other dtypes ([] where it has none)."""
    if definition.op_type not in VARIED_OP_TYPES or split_dtype(definition.name)[1]:
        return []
    official = dtype_of(definition)
    return [with_dtype(definition, dtype) for dtype in DTYPE_SUFFIXES if dtype != official]


def _axis(kind: str, description: str, value: int | None = None) -> dict[str, Any]:
    axis: dict[str, Any] = {"type": kind, "description": description}
    if value is not None:
        axis["value"] = value
    return axis


def _tensor(shape: list[str], dtype: str, description: str) -> dict[str, Any]:
    return {"shape": shape, "dtype": dtype, "description": description}


def _norm(name: str, fused: bool, hidden_size: int, eps: float, dtype: str) -> dict[str, Any]:
    rows = ["batch_size", "hidden_size"]
    inputs = {"hidden_states": _tensor(rows, dtype, "Activations, one token per row.")}
    args, add = "hidden_states, weight", ""
    if fused:
        inputs["residual"] = _tensor(rows, dtype, "Residual added before normalising.")
        args, add = "hidden_states, residual, weight", " + residual.float()"
    inputs["weight"] = _tensor(["hidden_size"], dtype, "Learned per-channel scale.")
    what = "Residual add then RMSNorm" if fused else "RMSNorm"
    reference = (
        f"import torch\n\nHIDDEN_SIZE = {hidden_size}\nEPS = {eps!r}\n\n\n"
        f"@torch.no_grad()\ndef run({args}):\n"
        "    assert hidden_states.shape[-1] == HIDDEN_SIZE\n"
        f"    x = hidden_states.float(){add}\n"
        "    inv_rms = torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + EPS)\n"
        "    return (x * inv_rms * weight.float()).to(hidden_states.dtype)\n")
    return {
        "name": name, "op_type": "rmsnorm",
        "description": (f"{what} over a hidden size of {hidden_size} with eps {eps!r}: float32 "
                        f"math, one rounding to {dtype}. Generated from the "
                        f"{'fused_add_rmsnorm' if fused else 'rmsnorm'} family template."),
        "tags": [f"{FAMILY_TAG}{'fused_add_rmsnorm' if fused else 'rmsnorm'}", "generated"],
        "axes": {"batch_size": _axis("var", "Rows (tokens)."),
                 "hidden_size": _axis("const", "Length of each row.", hidden_size)},
        "inputs": inputs,
        "outputs": {"output": _tensor(rows, dtype, "Normalised and scaled rows.")},
        "reference": reference,
    }


def _silu_and_mul(name: str, intermediate_size: int, dtype: str) -> dict[str, Any]:
    reference = (
        f"import torch\n\nINTERMEDIATE_SIZE = {intermediate_size}\n\n\n"
        "@torch.no_grad()\ndef run(gate_up):\n"
        "    assert gate_up.shape[-1] == 2 * INTERMEDIATE_SIZE\n"
        "    gate = gate_up[:, :INTERMEDIATE_SIZE].float()\n"
        "    up = gate_up[:, INTERMEDIATE_SIZE:].float()\n"
        "    return (gate * torch.sigmoid(gate) * up).to(gate_up.dtype)\n")
    return {
        "name": name, "op_type": "activation",
        "description": (f"silu(gate) * up of a gated MLP, intermediate size {intermediate_size}"
                        f": input [gate | up], float32 math, one rounding to {dtype}. "
                        "Generated from the silu_and_mul family template."),
        "tags": [f"{FAMILY_TAG}silu_and_mul", "generated"],
        "axes": {"num_tokens": _axis("var", "Rows (tokens)."),
                 "intermediate_size": _axis("const", "MLP intermediate size.",
                                            intermediate_size),
                 "gate_up_size": _axis("const", "2 * intermediate_size.",
                                       2 * intermediate_size)},
        "constraints": ["gate_up_size == 2 * intermediate_size"],
        "inputs": {"gate_up": _tensor(["num_tokens", "gate_up_size"], dtype,
                                      "Concatenated [gate | up] projection output.")},
        "outputs": {"output": _tensor(["num_tokens", "intermediate_size"], dtype,
                                      "silu(gate) * up.")},
        "reference": reference,
    }


def _gemm(name: str, n: int, k: int, dtype: str) -> dict[str, Any]:
    reference = (f"import torch\n\nN = {n}\nK = {k}\n\n\n@torch.no_grad()\ndef run(A, B):\n"
                 "    assert A.shape[-1] == K and tuple(B.shape) == (N, K)\n"
                 "    return torch.matmul(A, B.t())\n")
    return {
        "name": name, "op_type": "gemm",
        "description": (f"C = A @ B^T, A [M, {k}] and B [{n}, {k}] (nn.Linear layout), "
                        f"{dtype}. Generated from the gemm family template."),
        "tags": [f"{FAMILY_TAG}gemm", "generated"],
        "axes": {"M": _axis("var", "Rows of A and C (tokens)."),
                 "N": _axis("const", "Output features.", n),
                 "K": _axis("const", "Input features.", k)},
        "inputs": {"A": _tensor(["M", "K"], dtype, "Activations."),
                   "B": _tensor(["N", "K"], dtype, "Weight, one output feature per row.")},
        "outputs": {"C": _tensor(["M", "N"], dtype, "A @ B^T.")},
        "reference": reference,
    }


def _rope(name: str, head_size: int, rotary_dim: int, dtype: str) -> dict[str, Any]:
    reference = (
        f"import torch\n\nHEAD_SIZE = {head_size}\nROTARY_DIM = {rotary_dim}\n\n\n"
        "def _rotate(x, cos, sin):\n"
        "    x = x.float()\n"
        "    rot, rest = x[..., :ROTARY_DIM], x[..., ROTARY_DIM:]\n"
        "    x1, x2 = rot.chunk(2, dim=-1)\n"
        "    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)\n"
        "    return torch.cat((out, rest), dim=-1)\n\n\n"
        "@torch.no_grad()\ndef run(q, k, cos_sin_cache, positions):\n"
        "    assert q.shape[-1] == HEAD_SIZE and cos_sin_cache.shape[-1] == ROTARY_DIM\n"
        "    cos, sin = cos_sin_cache[positions].float().chunk(2, dim=-1)\n"
        "    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)\n"
        "    return _rotate(q, cos, sin).to(q.dtype), _rotate(k, cos, sin).to(k.dtype)\n")
    tokens_q = ["num_tokens", "num_qo_heads", "head_size"]
    tokens_k = ["num_tokens", "num_kv_heads", "head_size"]
    return {
        "name": name, "op_type": "rope",
        "description": (f"NeoX-style rotary embedding from a cos/sin cache, head size "
                        f"{head_size}, rotary dim {rotary_dim}. Generated from the rope "
                        "family template."),
        "tags": [f"{FAMILY_TAG}rope", "generated"],
        "axes": {"num_tokens": _axis("var", "Tokens."),
                 "num_qo_heads": _axis("var", "Query heads."),
                 "num_kv_heads": _axis("var", "KV heads."),
                 "head_size": _axis("const", "Head dimension.", head_size),
                 "rotary_dim": _axis("const", "Rotated dimensions.", rotary_dim),
                 "max_seq_len": _axis("var", "Rows of the cos/sin cache.")},
        "inputs": {"q": _tensor(tokens_q, dtype, "Queries."),
                   "k": _tensor(tokens_k, dtype, "Keys."),
                   "cos_sin_cache": _tensor(["max_seq_len", "rotary_dim"], "float32",
                                            "[cos | sin] per position."),
                   "positions": _tensor(["num_tokens"], "int64", "Position of each token.")},
        "outputs": {"q_out": _tensor(tokens_q, dtype, "Rotated queries."),
                    "k_out": _tensor(tokens_k, dtype, "Rotated keys.")},
        "reference": reference,
    }


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("rmsnorm", "rmsnorm", "rmsnorm_h{hidden_size}[_eps{eps}][_fp16|_fp32]",
           ("hidden_size", "eps"), "rmsnorm_h{hidden_size}",
           lambda name, hidden_size, eps: _norm(name, False, hidden_size, eps, "bfloat16")),
    Family("fused_add_rmsnorm", "rmsnorm",
           "fused_add_rmsnorm_h{hidden_size}[_eps{eps}][_fp16|_fp32]", ("hidden_size", "eps"),
           "fused_add_rmsnorm_h{hidden_size}",
           lambda name, hidden_size, eps: _norm(name, True, hidden_size, eps, "bfloat16")),
    Family("silu_and_mul", "activation", "silu_and_mul_i{intermediate_size}[_fp16|_fp32]",
           ("intermediate_size",), "silu_and_mul_i{intermediate_size}",
           lambda name, intermediate_size: _silu_and_mul(name, intermediate_size, "bfloat16")),
    Family("gemm", "gemm", "gemm_n{N}_k{K}[_bf16|_fp32]", ("n", "k"), "gemm_n{n}_k{k}",
           lambda name, n, k: _gemm(name, n, k, "float16"), "float16"),
    Family("rope", "rope",
           "rope_with_cos_sin_cache_neox_style_d{head_size}_rd{rotary_dim}[_fp16|_fp32]",
           ("head_size", "rotary_dim"),
           "rope_with_cos_sin_cache_neox_style_d{head_size}_rd{rotary_dim}",
           lambda name, head_size, rotary_dim: _rope(name, head_size, rotary_dim, "bfloat16")),
)}
# Families the catalogue ships definitions of that no template writes (the engines' in-place
# residual-add norm, bfloat16 officially): named like the others, never generated.
SHIPPED_ONLY = {"fused_add_rmsnorm_residual": "fused_add_rmsnorm_residual_h{hidden_size}"}


def name_pattern(family: str) -> str:
    """A family's name at its official eps and dtype, as a `str.format` pattern."""
    spec = FAMILIES.get(family)
    pattern = spec.pattern if spec is not None else SHIPPED_ONLY.get(family)
    if pattern is None:
        raise SchemaError(f"unknown definition family '{family}' "
                          f"(known: {sorted({*FAMILIES, *SHIPPED_ONLY})})")
    return pattern


def definition_name(family: str, known: Mapping[str, Definition], dtype: str | None = None,
                    **constants: Any) -> str:
    """The name of `family`'s definition for `constants` in `dtype` (default: the family's
    official one): the one path from an op's constants to a definition name, taken by
    `resolve` (the transformers adapter) and `fib_runtime.engine_ops` (the engine adapters).

    Norm families take `eps`; a name's official eps is the known definition's, or
    DEFAULT_EPS for a hidden size nobody defined; any other eps (compared exactly) is spelled
    in the name, before the dtype suffix.
    """
    spec = FAMILIES.get(family)
    official_dtype = spec.dtype if spec is not None else "bfloat16"
    return dtype_name(_eps_name(name_pattern(family).format(**constants), known, constants),
                      dtype or official_dtype, official_dtype)


def _eps_name(name: str, known: Mapping[str, Definition], constants: Mapping[str, Any]) -> str:
    eps = constants.get("eps")
    if eps is None:
        return name
    base = known.get(name)
    official = eps_of(base) if base is not None else DEFAULT_EPS
    return name if official is not None and float(eps) == official else \
        f"{name}_eps{eps_label(float(eps))}"


def resolve(family: str, known: Mapping[str, Definition], dtype: str | None = None,
            **constants: Any) -> Definition:
    """The definition of `family` for `constants` in `dtype` (default: the family's official
    one), named by `definition_name`: the known one (catalogue or database) of that name when
    its eps agrees, else one generated from the template.
    """
    spec = FAMILIES.get(family)
    if spec is None:
        raise SchemaError(f"unknown definition family '{family}' (known: {sorted(FAMILIES)})")
    full = definition_name(family, known, dtype, **constants)
    name = split_dtype(full)[0]  # in the official dtype
    eps = constants.get("eps")

    def agrees(found: Definition | None) -> bool:
        return found is not None and (eps is None or eps_of(found) == float(eps))

    if agrees(known.get(full)):
        return known[full]
    base = known[name] if agrees(known.get(name)) else Definition.from_dict(
        spec.build(name, **constants))
    return with_dtype(base, dtype or spec.dtype)
