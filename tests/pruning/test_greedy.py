import itertools
import math

import pytest

from pruning.apply import pruned
from pruning.evaluate import evaluate_quality
from pruning.greedy import greedy_cost, greedy_order
from pruning.ranking import RankingError
from tests.tiny_models import LAYERS, tiny_ids, tiny_model


def _evaluator(model, ids, calls):
    def evaluate(sets, step_progress):
        calls.append(sorted(sets))
        res = evaluate_quality(model, ids, {n: _variant(model, "layer", b) for n, b in sets.items()},
                               batch_size=2, progress=lambda d, t: step_progress(d / t))
        return {n: q.perplexity for n, q in res.items()}
    return evaluate


def _variant(model, granularity, blocks):
    blocks = list(blocks)
    return lambda: pruned(model, granularity, blocks)


@pytest.mark.parametrize("granularity", ["layer", "attn"])
def test_greedy_order_equals_the_greedy_walk_over_brute_force_perplexities(granularity):
    assert LAYERS == 4
    model = tiny_model("llama", seed=1)
    ids = tiny_ids(4, 16, seed=5)
    # Every subset of 1..3 of the 4 blocks (a model keeps at least one), measured once.
    steps = LAYERS - 1
    subsets = [list(c) for r in range(1, steps + 1)
               for c in itertools.combinations(range(LAYERS), r)]
    table = evaluate_quality(model, ids, {str(s): _variant(model, granularity, s) for s in subsets},
                             batch_size=2)
    removed, expected_ppl = [], []
    for _ in range(steps):  # by hand: the cheapest next removal, ties to the smallest block
        best = min((table[str(sorted([*removed, b]))].perplexity, b)
                   for b in range(LAYERS) if b not in removed)
        removed.append(best[1])
        expected_ppl.append(best[0])

    def evaluate(sets, step_progress):
        res = evaluate_quality(model, ids, {n: _variant(model, granularity, b) for n, b in sets.items()},
                               batch_size=2)
        return {n: q.perplexity for n, q in res.items()}

    result = greedy_order(evaluate, granularity, range(LAYERS), steps=steps)
    assert list(result.order) == removed
    for got, want in zip(result.perplexity, expected_ppl, strict=True):
        assert got == pytest.approx(want, rel=1e-6)
    # The first step is the best single removal of all.
    assert result.perplexity[0] == pytest.approx(
        min(table[str([b])].perplexity for b in range(LAYERS)), rel=1e-6)
    assert result.variant_passes == greedy_cost(LAYERS, steps) == 4 + 3 + 2
    scores = result.scores(LAYERS)
    assert [scores[b] for b in result.order] == [0.0, 1.0, 2.0]
    assert math.isnan(scores[({*range(LAYERS)} - set(result.order)).pop()])


def test_greedy_steps_stop_early_and_report_progress_with_a_time_estimate():
    model = tiny_model("llama", seed=2)
    ids = tiny_ids(2, 12, seed=1)
    calls, reports = [], []
    result = greedy_order(_evaluator(model, ids, calls), "layer", [1, 2, 3], steps=2,
                          progress=lambda f, m: reports.append((f, m)))
    assert result.steps == 2 and len(calls) == 2
    assert len(calls[0]) == 3 and len(calls[1]) == 2  # remaining candidates only
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert "perplexity-greedy: 2 steps, 5 variant passes" in reports[0][1]
    assert any("s left" in m for _, m in reports[1:])
    scores = result.scores(LAYERS)
    assert math.isnan(scores[0]) and sum(math.isnan(v) for v in scores) == 2


def test_greedy_refuses_zero_steps_and_repeated_candidates():
    with pytest.raises(RankingError, match="at least one step"):
        greedy_order(lambda s, p: {}, "layer", [1, 2], steps=0)
    with pytest.raises(RankingError, match="repeats block"):
        greedy_order(lambda s, p: {}, "layer", [1, 1])


def test_a_non_finite_perplexity_never_wins_a_step():
    def evaluate(sets, step_progress):
        return {n: (math.nan if b == [0] else 10.0 + b[-1]) for n, b in sets.items()}
    result = greedy_order(evaluate, "layer", [0, 1, 2], steps=1)
    assert result.order == (1,)
