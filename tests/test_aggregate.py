"""reports/aggregate.py: probability of improvement, IQM and their bootstrap intervals (through
rliable)
on hand-checked cases, the block's shape, and the errors a user can meet."""

import json

import numpy as np
import pytest

from reports import aggregate


def environments(values: dict[str, dict[str, list[float | None]]]) -> dict:
    """A summary's `environments` block from {task: {algo: [mean score per seed]}}."""
    return {task: {"marks": [], "pairs": [], "algorithms": {
        algo: {"seeds": {str(seed): {"scores": {}, "frames_to_threshold": None,
                                     "mean_score": v} for seed, v in enumerate(scores)}}
        for algo, scores in by_algo.items()}} for task, by_algo in values.items()}


def spec(tasks, pairs=(("a", "b"),), algorithms=("a", "b"), normalisation=None, reps=200):
    return aggregate.AggregateSpec(
        tasks=tuple(tasks), pairs=tuple(pairs), algorithms=tuple(algorithms), reps=reps,
        normalisation=normalisation or {t: (0.0, 1.0) for t in tasks})


def test_probability_of_improvement_of_constant_sets_is_one_or_zero():
    env = environments({"T1": {"a": [5.0] * 4, "b": [1.0] * 4},
                        "T2": {"a": [3.0] * 4, "b": [2.0] * 4}})
    block = aggregate.aggregate_block(env, spec(["T1", "T2"], pairs=(("a", "b"), ("b", "a"))))
    better, worse = block["probability_of_improvement"]
    assert (better["a"], better["b"], better["estimate"], better["ci"]) == ("a", "b", 1.0,
                                                                            [1.0, 1.0])
    assert (worse["a"], worse["b"], worse["estimate"], worse["ci"]) == ("b", "a", 0.0,
                                                                        [0.0, 0.0])


def test_probability_of_improvement_counts_ties_half_and_averages_over_tasks():
    # T1: a always wins (1); T2: a = b everywhere (ties: 1/2) -> (1 + 0.5) / 2
    env = environments({"T1": {"a": [2.0, 3.0], "b": [0.0, 1.0]},
                        "T2": {"a": [1.0, 1.0], "b": [1.0, 1.0]}})
    block = aggregate.aggregate_block(env, spec(["T1", "T2"]))
    assert block["probability_of_improvement"][0]["estimate"] == pytest.approx(0.75)
    lo, hi = block["probability_of_improvement"][0]["ci"]
    assert lo <= 0.75 <= hi
    # each task alone: a wins every draw on T1, ties every draw on T2
    by_task = block["probability_of_improvement_by_task"]
    assert list(by_task) == ["T1", "T2"]
    assert [(p["a"], p["b"], p["estimate"], p["ci"]) for p in by_task["T1"]] == \
        [("a", "b", 1.0, [1.0, 1.0])]
    assert [(p["estimate"], p["ci"]) for p in by_task["T2"]] == [(0.5, [0.5, 0.5])]


def test_iqm_of_a_known_array_with_normalisation():
    # one task, scores 10..80 normalised by [0, 10] -> 1..8; the middle half is 3, 4, 5, 6
    env = environments({"T": {"a": [10.0 * k for k in range(1, 9)], "b": [0.0] * 8}})
    block = aggregate.aggregate_block(env, spec(["T"], normalisation={"T": (0.0, 10.0)}))
    assert block["iqm"]["a"]["estimate"] == pytest.approx(4.5)
    assert block["iqm"]["b"] == {"estimate": 0.0, "ci": [0.0, 0.0]}
    lo, hi = block["iqm"]["a"]["ci"]
    assert 1.0 <= lo < 4.5 < hi <= 8.0
    # a negative low end (HalfCheetah's random policy) shifts before it scales
    env = environments({"T": {"a": [-100.0, 100.0, 300.0, 500.0], "b": [-100.0] * 4}})
    block = aggregate.aggregate_block(env, spec(["T"], normalisation={"T": (-100.0, 500.0)}))
    assert block["iqm"]["b"]["estimate"] == pytest.approx(0.0)
    assert block["iqm"]["a"]["estimate"] == pytest.approx((1 / 3 + 2 / 3) / 2)


def test_block_shape_and_recompute_from_the_summary_alone():
    env = environments({"T1": {"a": [1.0, 4.0, 2.0], "b": [0.5, 3.0, 2.5]},
                        "T2": {"a": [7.0, 9.0, 8.0], "b": [6.0, 9.5, 1.0]}})
    s = spec(["T1", "T2"], normalisation={"T1": (0.0, 4.0), "T2": (-1.0, 9.0)})
    block = aggregate.aggregate_block(env, s)
    assert {"tasks", "normalisation", "probability_of_improvement", "iqm"} <= set(block)
    assert block["tasks"] == ["T1", "T2"]
    assert block["normalisation"] == {"T1": [0.0, 4.0], "T2": [-1.0, 9.0]}
    assert set(block["iqm"]) == {"a", "b"}
    # the per-task estimates average to the one over the tasks
    overall = block["probability_of_improvement"][0]["estimate"]
    assert np.mean([block["probability_of_improvement_by_task"][t][0]["estimate"]
                    for t in ("T1", "T2")]) == pytest.approx(overall)
    # what a reader does with the committed JSON: the same numbers from the file alone
    summary = json.loads(json.dumps({"environments": env, "aggregate": block}))
    assert aggregate.recompute(summary) == block
    # the bootstrap is seeded (and leaves numpy's global generator as it was): another seed
    # moves the intervals, not the estimates
    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    other = aggregate.aggregate_block(env, aggregate.AggregateSpec(**{**s.__dict__, "seed": 1}))
    assert np.random.rand() == expected
    assert other["iqm"]["a"]["estimate"] == block["iqm"]["a"]["estimate"]
    intervals = [b["iqm"][k]["ci"] for b in (block, other) for k in "ab"] + [
        b["probability_of_improvement"][0]["ci"] for b in (block, other)]
    assert intervals[:2] + intervals[4:5] != intervals[2:4] + intervals[5:]


def test_normalised_scores_layout_and_errors():
    env = environments({"T1": {"a": [0.0, 2.0]}, "T2": {"a": [4.0, None, 8.0]},
                        "T3": {"a": [1.0, 2.0, 3.0]}})
    with pytest.raises(aggregate.AggregateError, match="different numbers of seeds"):
        aggregate.normalised_scores(env, "a", ["T1", "T3"], {"T1": (0, 2), "T3": (0, 8)})
    scores = aggregate.normalised_scores(env, "a", ["T2", "T1"], {"T1": (0, 2), "T2": (0, 8)})
    np.testing.assert_allclose(scores, [[0.5, 0.0], [1.0, 1.0]])  # [runs, tasks]
    with pytest.raises(aggregate.AggregateError, match="has no mean score on T4"):
        aggregate.normalised_scores(env, "a", ["T4"], {"T4": (0, 1)})
    with pytest.raises(aggregate.AggregateError, match="no normalisation for T2"):
        aggregate.AggregateSpec(tasks=("T1", "T2"), normalisation={"T1": (0, 1)},
                                pairs=(), algorithms=("a",))
    with pytest.raises(aggregate.AggregateError, match="high end must be above"):
        aggregate.AggregateSpec(tasks=("T1",), normalisation={"T1": (1, 1)},
                                pairs=(), algorithms=("a",))
    with pytest.raises(aggregate.AggregateError, match="no aggregate block"):
        aggregate.recompute({"environments": env})


def test_performance_profile_figure(tmp_path):
    env = environments({"T1": {"a": [0.2, 0.9, 0.5], "b": [0.1, 0.3, 0.2]}})
    path = aggregate.draw_performance_profile(env, spec(["T1"]), tmp_path / "profile.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    profiles, _ = aggregate.performance_profile(env, spec(["T1"]), np.array([0.0, 0.25, 0.95]))
    np.testing.assert_allclose(profiles["a"], [1.0, 2 / 3, 0.0])  # share of runs above tau
    np.testing.assert_allclose(profiles["b"], [1.0, 1 / 3, 0.0])
    # its intervals are seeded: the committed figure does not change when the report is rebuilt
    taus = np.linspace(0.0, 1.0, 11)
    first = aggregate.performance_profile(env, spec(["T1"]), taus)[1]
    again = aggregate.performance_profile(env, spec(["T1"]), taus)[1]
    for algo in ("a", "b"):
        np.testing.assert_array_equal(first[algo], again[algo])
