"""The distribution check of sampling definitions: support and frequencies, not values.

Seeded and with a false-alarm rate of 1e-6 per check, so deterministic and never flaky: the
correct samplers pass, a sampler biased inside the support (a temperature of 2) and one
ignoring top-k / top-p are caught, and retune's check kind picks this check for the official
sampling names even without the `check:` tag.
"""

from __future__ import annotations

import copy

import pytest
import torch

from fib_runtime.build import build_reference
from fib_runtime.catalogue import catalogue_root, load_catalogue
from fib_runtime.errors import SchemaError
from fib_runtime.measure import sampling_check
from fib_runtime.measure.checks import DISTRIBUTION, TOLERANCE, check_call, check_kind
from fib_runtime.measure.op_inputs import sampling_inputs
from fib_runtime.schema import Definition, Status
from tests.definitions.catalogue_cases import import_file

CATALOGUE = load_catalogue()
TORCH = import_file(catalogue_root() / "sampling" / "solutions" / "torch_sampling.py")
VOCAB = 1000  # small: many draws stay quick on the CPU


def _small(kind: str) -> Definition:
    """The official definition of `kind` with a vocabulary of VOCAB (same code otherwise)."""
    data = CATALOGUE.definitions[f"{kind}_v128256"].to_dict()
    data = copy.deepcopy(data)
    data["name"] = f"{kind}_v{VOCAB}"
    data["axes"]["vocab_size"]["value"] = VOCAB
    data["reference"] = data["reference"].replace("VOCAB = 128256", f"VOCAB = {VOCAB}")
    return Definition.from_dict(data)


def _inputs(definition: Definition, rows: int = 4, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    axes = {"batch_size": rows, "vocab_size": definition.const_axes["vocab_size"]}
    return [sampling_inputs(n, s, axes, gen) for n, s in definition.inputs.items()]


def _tempered(definition: Definition):
    """Biased inside the support: the right tokens, drawn with probabilities ~ q^(1/2)."""
    def sample(*args):
        dist, _ = sampling_check.target(*sampling_check.parameters(definition, args))
        return torch.multinomial(dist.sqrt().float(), 1).squeeze(1)
    return sample


def _unfiltered(definition: Definition):
    """Forgets the filters: draws from the whole vocabulary."""
    return lambda probs, *rest: torch.multinomial(probs, 1).squeeze(1)


KINDS = ["top_k_sampling_from_probs", "top_k_top_p_sampling_from_probs",
         "top_p_sampling_from_probs"]
ENTRY = {"top_k_sampling_from_probs": TORCH.top_k_sampling,
         "top_k_top_p_sampling_from_probs": TORCH.top_k_top_p_sampling,
         "top_p_sampling_from_probs": TORCH.top_p_sampling}


def _judge(definition: Definition, sampler, seed: int = 1):
    torch.manual_seed(seed)
    args = _inputs(definition)
    expected = (build_reference(definition)(*args),)
    return check_call(definition, sampler, args, sampler(*args), expected)


@pytest.mark.parametrize("kind", KINDS)
def test_correct_samplers_pass(kind: str):
    definition = _small(kind)
    samplers = [ENTRY[kind]]
    if kind == "top_k_top_p_sampling_from_probs":  # the reference too (a slow Python loop)
        samplers.append(build_reference(definition))
    for sampler in samplers:
        for seed in (1, 2):
            check = _judge(definition, sampler, seed)
            assert check.status is Status.PASSED, check.log
            assert check.extra["draws"] == sampling_check.DRAWS
            assert 0 < check.max_relative_error < 1  # the distance stayed below its bound


@pytest.mark.parametrize("kind", KINDS)
def test_a_sampler_biased_inside_the_support_is_caught(kind: str):
    definition = _small(kind)
    check = _judge(definition, _tempered(definition))
    assert check.status is Status.INCORRECT_NUMERICAL
    assert "total variation" in check.log and check.max_relative_error > 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_sampler_ignoring_the_filters_is_caught(kind: str):
    definition = _small(kind)
    check = _judge(definition, _unfiltered(definition))
    assert check.status is Status.INCORRECT_NUMERICAL
    assert "outside the top-k / top-p support" in check.log


def test_the_bound_holds_its_false_alarm_rate_for_exact_draws():
    """Exact multinomial counts from the target itself, 200 times: never above the bound."""
    definition = _small("top_k_top_p_sampling_from_probs")
    probs, top_k, top_p = _inputs(definition, rows=1)
    dist, _ = sampling_check.target(probs, top_k, top_p)
    gen = torch.Generator().manual_seed(7)
    ratios = []
    for _ in range(200):
        ids = torch.multinomial(dist[0].float(), 2048, replacement=True, generator=gen)
        counts = torch.bincount(ids, minlength=VOCAB).double()
        tv, tau = sampling_check.distance_and_bound(dist[0], counts, 2048, 1, 1e-6)
        ratios.append(tv / tau)
    assert max(ratios) < 1.0


def test_support_allows_rounding_ties_and_top_p_boundary():
    probs = torch.tensor([[0.4, 0.3, 0.3, 0.0]])
    _, support = sampling_check.target(probs, torch.tensor([2]))
    assert support.tolist() == [[True, True, True, False]]  # the tie with the 2nd value
    _, support = sampling_check.target(probs, None, torch.tensor([0.7]))
    assert support[0, :3].tolist() == [True, True, True]  # mass before id 2 is exactly 0.7


def test_k_zero_or_at_least_vocab_keeps_everything_and_p_zero_the_argmax():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.1, 0.6, 0.3]])
    dist, _ = sampling_check.target(probs, torch.tensor([0, 3]), torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(dist, torch.tensor([[0, 1, 0], [0.1, 0.6, 0.3]],
                                                  dtype=torch.float64))


def test_check_kind_by_tag_else_op_type():
    official = _small("top_k_sampling_from_probs").to_dict()
    official["tags"] = [t for t in official["tags"] if not t.startswith("check:")]
    assert check_kind(Definition.from_dict(official)) == DISTRIBUTION
    assert check_kind(CATALOGUE.definitions["rmsnorm_h4096"]) == TOLERANCE
    official["tags"] = ["check:bogus"]
    with pytest.raises(SchemaError, match="check:bogus"):
        check_kind(Definition.from_dict(official))
