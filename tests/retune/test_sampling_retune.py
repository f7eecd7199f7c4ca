"""Retune on the CPU judges a sampler by its definition's check kind: a correct top-k sampler
passes, one biased inside the support and one ignoring top-k are INCORRECT_NUMERICAL, from
inputs the built-in sampling input maker makes (probability rows, top_k per row)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fib_runtime.retuning import retune
from fib_runtime.schema import Solution, Status, Trace
from fib_runtime.store import TraceDB
from tests import factories
from tests.measure.test_sampling_check import _small

FAST = {"warmup": 1, "iters": 3, "progress": False, "devices": "cpu"}
_FILTER = """import torch


def _top_k(probs, top_k):
    vocab = probs.shape[1]
    k = top_k.long().clamp(min=0)
    k = torch.where((k > 0) & (k < vocab), k, torch.full_like(k, vocab))
    ranks = torch.argsort(torch.argsort(probs, dim=-1, descending=True), dim=-1)
    kept = probs * (ranks < k.unsqueeze(1))
    return kept / kept.sum(-1, keepdim=True)

"""
SAMPLERS = {
    "good": _FILTER + "def run(probs, top_k):\n"
                      "    return torch.multinomial(_top_k(probs, top_k), 1).squeeze(1)\n",
    "tempered": _FILTER + "def run(probs, top_k):\n"
                          "    biased = _top_k(probs, top_k).sqrt()\n"
                          "    return torch.multinomial(biased, 1).squeeze(1)\n",
    "unfiltered": _FILTER + "def run(probs, top_k):\n"
                            "    return torch.multinomial(probs, 1).squeeze(1)\n",
}


def test_retune_judges_samplers_by_distribution(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    definition = _small("top_k_sampling_from_probs")
    db = TraceDB.open(tmp_path / "db", create=True)
    db.add_definition(definition)
    for name, code in SAMPLERS.items():
        db.add_solution(Solution.from_dict(factories.solution(name, definition.name, code=code)))
    workload = factories.workload(definition.name, 8, probs={"type": "random"},
                                  top_k={"type": "random"})
    workload["workload"]["uuid"] = "0f1e2d3c-sampling-retune"  # seeds the inputs: deterministic
    db.append_workloads([Trace.from_dict(workload)])
    retune(db, **FAST)
    traces = {t.solution: t for t in TraceDB.open(db.root).traces_for(definition.name)
              if t.solution}
    status = {name: traces[name].evaluation.status for name in SAMPLERS}
    assert status == {"good": Status.PASSED, "tempered": Status.INCORRECT_NUMERICAL,
                      "unfiltered": Status.INCORRECT_NUMERICAL}
    assert "total variation" in traces["tempered"].evaluation.log
    assert "support" in traces["unfiltered"].evaluation.log
