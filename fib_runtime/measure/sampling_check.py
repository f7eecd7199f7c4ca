"""Correctness of a sampler, whose output is random: support and frequencies, never values.

A sampling definition takes `probs` [rows, vocab] and any of `top_k`, `top_p` per row (the
official `top_k_sampling_from_probs_v*`, `top_k_top_p_sampling_from_probs_v*`,
`top_p_sampling_from_probs_v*`), and draws one token id per row from the filtered,
renormalised distribution (`target`). Two checks:

- **support** (`support_check`, one call's output): every id lies in its row's support. A
  token whose place in or out is decided by float rounding (a tie at the k-th value, a
  prefix mass within `BOUNDARY_SLACK` of p) counts as inside.
- **frequencies** (`frequency_check`, many calls): up to `ROWS` rows are each repeated into
  batches and sampled `DRAWS` times; the ids are binned (`BINS` bins of about equal target
  mass, heavy tokens alone; on the CPU fewer draws for large vocabularies, `draws_for`) and
  the total-variation distance between the empirical and the
  target bin frequencies must stay under
      tau = 1/2 * sum_b sqrt(q_b (1 - q_b) / N) + sqrt(ln(rows / ALPHA) / (2 N)),
  the first term a bound on its expectation (Cauchy-Schwarz), the second McDiarmid's bound on
  its excess (TV moves by at most 1/N per draw). A correct sampler fails a row with
  probability at most ALPHA / rows, so a check at most ALPHA (1e-6): not flaky, whatever the
  seed or load. Binning only merges tokens, so it never raises the distance of a correct
  sampler and keeps the bound tight for large supports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from fib_runtime.measure.compare import Check, as_tuple
from fib_runtime.schema import Definition, Status

DRAWS = 8192  # draws per checked row (on a GPU)
CPU_ELEMENTS = 1 << 28  # on the CPU: draws per row limited to this many probs elements ...
MIN_DRAWS = 1024  # ... but never fewer than this
ROWS = 4  # rows of the workload checked by frequency
BINS = 32
ALPHA = 1e-6  # false-alarm rate of one frequency check
BOUNDARY_SLACK = 1e-5  # prefix mass this close to p: the token may be in or out
_CHUNK_ELEMENTS = 1 << 24  # probs elements per sampling call (64 MiB of float32)


def parameters(definition: Definition, args: Sequence[Any]) -> tuple[Any, Any, Any]:
    """(probs, top_k or None, top_p or None) of a call, by the definition's input names."""
    named = dict(zip(definition.inputs, args, strict=False))
    return named["probs"], named.get("top_k"), named.get("top_p")


def target(probs: Any, top_k: Any = None, top_p: Any = None) -> tuple[Any, Any]:
    """Per row, the distribution a correct sampler draws from (float64) and the ids it may
    return (bool: the support widened by rounding-ambiguous boundary tokens)."""
    import torch

    rows, vocab = probs.shape
    values, order = torch.sort(probs.detach().to(torch.float64), dim=-1, descending=True)
    ranks = torch.arange(vocab, device=probs.device).expand(rows, vocab)
    keep = allowed = torch.ones_like(values, dtype=torch.bool)
    if top_k is not None:
        k = top_k.to(torch.int64).unsqueeze(1)
        k = torch.where((k > 0) & (k < vocab), k, torch.full_like(k, vocab))
        keep = ranks < k
        kth = values.gather(1, (k - 1).clamp(min=0))
        allowed = keep | (values >= kth)  # ties with the k-th value
        values = values * keep
        values = values / values.sum(-1, keepdim=True)
    if top_p is not None:
        p = top_p.to(torch.float64).unsqueeze(1)
        before = values.cumsum(-1) - values
        first = ranks == 0
        keep_p = (before <= p) | first
        keep = keep & keep_p
        allowed = allowed & ((before <= p + BOUNDARY_SLACK) | first)
        values = values * keep_p
        values = values / values.sum(-1, keepdim=True)
    dist = torch.zeros_like(values).scatter_(1, order, values)
    support = torch.zeros_like(allowed).scatter_(1, order, allowed | keep)
    return dist, support


def support_check(definition: Definition, got: Any, args: Sequence[Any]) -> Check:
    """Every sampled id of one call inside its row's support (ids out of range included)."""
    import torch

    samples = as_tuple(got)[0]
    probs, top_k, top_p = parameters(definition, args)
    _, support = target(probs, top_k, top_p)
    ids = samples.detach().to(probs.device, torch.int64)
    in_range = (ids >= 0) & (ids < probs.shape[1])
    inside = in_range.clone()
    rows = in_range.nonzero().squeeze(1)
    inside[rows] = support[rows, ids[rows]]
    bad = int((~inside).sum())
    if bad:
        row = int((~inside).nonzero()[0, 0])
        return Check(Status.INCORRECT_NUMERICAL,
                     f"output 'samples': {bad} of {ids.numel()} ids outside the top-k / top-p "
                     f"support (row {row}: id {int(ids[row])})", 1.0, 1.0,
                     {"outside_support": bad})
    return Check(Status.PASSED, "", 0.0, 0.0)


def draws_for(vocab: int, device: Any) -> int:
    """Draws per row: DRAWS on a GPU; on the CPU at most CPU_ELEMENTS / vocab (>= MIN_DRAWS)."""
    if str(device).startswith("cuda"):
        return DRAWS
    return min(DRAWS, max(MIN_DRAWS, CPU_ELEMENTS // max(1, vocab)))


def frequency_check(definition: Definition, call: Callable[..., Any], args: Sequence[Any],
                    draws: int | None = None, rows: int = ROWS, alpha: float = ALPHA) -> Check:
    """Sample up to `rows` rows of the call `draws` times each and test the frequencies
    (module docstring); the verdict's max_absolute_error is the worst total-variation
    distance, max_relative_error the worst distance over its bound."""
    import torch

    probs, top_k, top_p = parameters(definition, args)
    draws = draws or draws_for(probs.shape[1], probs.device)
    checked = min(rows, probs.shape[0])
    dist, support = target(probs[:checked], *(t[:checked] if t is not None else None
                                             for t in (top_k, top_p)))
    worst_tv = worst_ratio = 0.0
    chunk = max(1, min(draws, _CHUNK_ELEMENTS // max(1, probs.shape[1])))
    for r in range(checked):
        batch = [probs[r:r + 1]] + [t[r:r + 1] if t is not None else None for t in (top_k, top_p)]
        counts = torch.zeros(probs.shape[1], dtype=torch.float64, device=probs.device)
        done = 0
        while done < draws:
            n = min(chunk, draws - done)
            call_args = _repeated(definition, args, batch, n)
            ids = as_tuple(call(*call_args))[0].to(torch.int64).reshape(-1)
            if ((ids < 0) | (ids >= probs.shape[1])).any() or not bool(support[r, ids].all()):
                return Check(Status.INCORRECT_NUMERICAL, f"output 'samples': row {r}: an id "
                             "outside the top-k / top-p support", 1.0, 1.0)
            counts += torch.bincount(ids, minlength=probs.shape[1]).to(counts)
            done += n
        tv, tau = distance_and_bound(dist[r], counts, draws, checked, alpha)
        worst_tv, worst_ratio = max(worst_tv, tv), max(worst_ratio, tv / tau)
        if tv > tau:
            return Check(Status.INCORRECT_NUMERICAL,
                         f"output 'samples': row {r}: frequencies over {draws} draws are "
                         f"{tv:.4f} in total variation from the target distribution, above the "
                         f"bound {tau:.4f} (false-alarm rate {alpha:g})",
                         tv, tv / tau, {"tv_distance": tv, "tv_bound": tau, "draws": draws})
    return Check(Status.PASSED, "", worst_tv, worst_ratio,
                 {"tv_distance": worst_tv, "draws": draws, "rows_checked": checked})


def distance_and_bound(dist: Any, counts: Any, draws: int, rows: int,
                       alpha: float) -> tuple[float, float]:
    """Total variation between binned frequencies and the binned target, and its bound."""
    import torch

    order = torch.argsort(dist, descending=True)
    mass = dist[order]
    live = int((mass > 0).sum())
    # bin b holds the tokens whose cumulative mass before them falls in [b/BINS, (b+1)/BINS)
    before = (mass[:live].cumsum(0) - mass[:live]).clamp(0.0, 1.0)
    bins = torch.clamp((before * BINS).to(torch.int64), max=BINS - 1)
    q = torch.zeros(BINS, dtype=torch.float64, device=dist.device).index_add_(0, bins, mass[:live])
    f = torch.zeros_like(q).index_add_(0, bins, counts[order][:live]) / draws
    tv = 0.5 * float((f - q).abs().sum()) + 0.5 * float(counts[order][live:].sum()) / draws
    tau = 0.5 * float(torch.sqrt(q * (1 - q) / draws).sum()) + math.sqrt(
        math.log(rows / alpha) / (2 * draws))
    return tv, tau


def _repeated(definition: Definition, args: Sequence[Any], row: list[Any], n: int) -> list[Any]:
    """The call's arguments with its sampling inputs replaced by one row repeated n times."""
    replaced = dict(zip(("probs", "top_k", "top_p"), row, strict=True))
    out = []
    for name, arg in zip(definition.inputs, args, strict=False):
        value = replaced.get(name)
        out.append(value.expand(n, *value.shape[1:]).contiguous() if value is not None else arg)
    return out
