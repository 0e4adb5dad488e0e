"""Evidence across tasks, as the field reports it (Agarwal et al., "Deep Reinforcement Learning at
the Edge of the Statistical Precipice", NeurIPS 2021, and its library `rliable`).

Used by reports/report.py when it writes a benchmark report, and by anyone who wants to recompute
a committed summary's `aggregate` block from that summary alone (`recompute`). Reads and writes
no files except the figure that `draw_performance_profile` is asked for.

The numbers start from one value per run: its mean score over the budget (the area under its
learning curve divided by the budget; reports/scores.py defines it). Each task's values
are normalised, (score - low) / (high - low), with the task's `normalisation` [low, high]
(here: a uniformly random policy and a published 1M-frame score). Then, over the tasks:
- probability of improvement of A over B: the mean over tasks of P(X_A > X_B) + P(X_A = X_B) / 2
  for a random run of each (the Mann-Whitney U statistic over the seeds divided by n_A n_B);
  it does not depend on the normalisation; the block also gives it on each task alone;
- IQM: the interquartile mean of all runs' normalised values over all tasks (the mean of the
  middle 50%, scipy's trim_mean with 25% cut at each end);
- each with a 95% percentile interval from a stratified bootstrap: runs resampled with
  replacement within each task (for a pair, each algorithm's runs independently, as rliable's
  StratifiedIndependentBootstrap does), `reps` replications, seeded with `seed`;
- a performance profile: for each normalised score tau, the share of runs scoring above it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from errors import UserError

REPS = 2_000  # bootstrap replications (as rliable's README computes the probability of improvement)
CONFIDENCE = 0.95


class AggregateError(UserError, ValueError):
    """The summary lacks what the aggregate needs; the message is one sentence with the fix."""


@dataclasses.dataclass(frozen=True)
class AggregateSpec:
    """What to aggregate: the tasks, their normalisation and the comparisons."""

    tasks: tuple[str, ...]  # environment names
    normalisation: dict[str, tuple[float, float]]  # env -> (low, high): score 0 and score 1
    pairs: tuple[tuple[str, str], ...]  # (A, B): probability that A improves on B
    algorithms: tuple[str, ...]  # IQM and performance profile of each
    reps: int = REPS
    seed: int = 0

    def __post_init__(self):
        for task in self.tasks:
            if task not in self.normalisation:
                raise AggregateError(f"The aggregate has no normalisation for {task}; add "
                                     f"{task}: [low, high] to it.")
            low, high = self.normalisation[task]
            if not high > low:
                raise AggregateError(f"The normalisation of {task} is [{low}, {high}]; its "
                                     f"high end must be above its low end.")


def normalised_scores(environments: dict, algo: str, tasks: Sequence[str],
                      normalisation: dict) -> np.ndarray:
    """[runs, tasks]: the normalised mean scores over the budget of `algo`, one column per task,
    rows in seed order (rliable's layout). Every task must have the same number of seeds with a
    value; AggregateError otherwise."""
    columns = []
    for task in tasks:
        seeds = environments.get(task, {}).get("algorithms", {}).get(algo, {}).get("seeds", {})
        values = [seeds[s]["mean_score"] for s in sorted(seeds, key=int)
                  if seeds[s].get("mean_score") is not None]
        if not values:
            raise AggregateError(f"{algo} has no mean score on {task}; run it there or leave "
                                 f"{task} out of the aggregate.")
        low, high = normalisation[task]
        columns.append((np.asarray(values, np.float64) - low) / (high - low))  # [runs]
    if len({len(c) for c in columns}) != 1:
        counts = ", ".join(f"{t}: {len(c)}" for t, c in zip(tasks, columns, strict=True))
        raise AggregateError(f"{algo} has different numbers of seeds across the tasks "
                             f"({counts}); aggregate over tasks with every seed finished.")
    return np.stack(columns, axis=1)  # [runs, tasks]


def _iqm(scores: np.ndarray) -> np.ndarray:
    from rliable import metrics
    return np.array([metrics.aggregate_iqm(scores)])


@contextlib.contextmanager
def _seeded(seed: int):
    """numpy's global generator seeded with `seed`, and put back as it was afterwards. rliable
    1.2.0 draws its resampled indices from that generator (its `random_state` reaches only
    arch's, which the percentile interval does not use, and is deprecated there), so this is
    what makes its intervals the same for the same seed."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _interval(score_dict: dict, func, reps: int, seed: int) -> tuple[dict, dict]:
    """rliable's point estimates and intervals, the same for the same `seed`."""
    from rliable import library as rly

    with _seeded(seed):
        return rly.get_interval_estimates(score_dict, func, reps=reps,
                                          confidence_interval_size=CONFIDENCE)


def aggregate_block(environments: dict, spec: AggregateSpec) -> dict:
    """The summary's `aggregate` block, computed from its `environments` block:

    {"tasks": [ENV, ...], "normalisation": {ENV: [low, high]}, "score": ..., "pairs": [[A, B]],
     "algorithms": [ALGO, ...], "reps": N, "seed": S, "confidence": 0.95,
     "probability_of_improvement": [{"a": A, "b": B, "estimate": x, "ci": [lo, hi]}, ...],
     "iqm": {ALGO: {"estimate": x, "ci": [lo, hi]}, ...},
     "probability_of_improvement_by_task": {ENV: [{"a": A, ...}, ...]}}

    `probability_of_improvement_by_task` is the same statistic on each task alone (its
    estimates average to the one over the tasks; its intervals, over one task's seeds, are
    wide).
    """
    from rliable import metrics

    tasks = list(spec.tasks)
    scores = {algo: normalised_scores(environments, algo, tasks, spec.normalisation)
              for algo in dict.fromkeys([*spec.algorithms, *(a for p in spec.pairs for a in p)])}

    def improvement(columns: slice) -> list[dict]:
        out = []
        for a, b in spec.pairs:
            key = f"{a},{b}"
            point, interval = _interval({key: (scores[a][:, columns], scores[b][:, columns])},
                                        metrics.probability_of_improvement, spec.reps,
                                        spec.seed)
            out.append({"a": a, "b": b, "estimate": float(point[key]),
                        "ci": [float(v) for v in np.ravel(interval[key])]})
        return out

    by_task = {t: improvement(slice(i, i + 1)) for i, t in enumerate(tasks)}
    point, interval = _interval({a: scores[a] for a in spec.algorithms}, _iqm, spec.reps,
                                spec.seed)
    iqm = {a: {"estimate": float(np.ravel(point[a])[0]),
               "ci": [float(v) for v in np.ravel(interval[a])]} for a in spec.algorithms}
    return dict(empty_block(dataclasses.replace(spec, tasks=tuple(tasks))),
                probability_of_improvement=improvement(slice(None)), iqm=iqm,
                probability_of_improvement_by_task=by_task)


def empty_block(spec: AggregateSpec) -> dict:
    """The block's description of what is aggregated and how, without numbers."""
    return {"tasks": list(spec.tasks),
            "normalisation": {t: list(v) for t, v in spec.normalisation.items()},
            "score": "mean score over the budget, normalised per task",
            "pairs": [list(p) for p in spec.pairs], "algorithms": list(spec.algorithms),
            "reps": spec.reps, "seed": spec.seed, "confidence": CONFIDENCE,
            "probability_of_improvement": [], "iqm": {},
            "probability_of_improvement_by_task": {}}


def spec_of(block: dict) -> AggregateSpec:
    """The AggregateSpec a committed `aggregate` block was computed with."""
    try:
        return AggregateSpec(
            tasks=tuple(block["tasks"]),
            normalisation={t: tuple(v) for t, v in block["normalisation"].items()},
            pairs=tuple((a, b) for a, b in block["pairs"]),
            algorithms=tuple(block["algorithms"]), reps=int(block["reps"]),
            seed=int(block["seed"]))
    except (KeyError, TypeError, ValueError) as e:
        raise AggregateError(f"The aggregate block lacks {e}; write the summary again with "
                             f"bench/sample_efficiency.py --report-only.") from None


def recompute(summary: dict) -> dict:
    """A summary's `aggregate` block computed again from the summary's own per-seed numbers
    (without the summary's `pending_tasks`, which only the benchmark knows)."""
    if "aggregate" not in summary:
        raise AggregateError("The summary has no aggregate block; its preset names no tasks "
                             "to aggregate.")
    spec = spec_of(summary["aggregate"])
    if not spec.tasks:
        return empty_block(spec)
    return aggregate_block(summary["environments"], spec)


def performance_profile(environments: dict, spec: AggregateSpec, taus: np.ndarray,
                        scores: dict | None = None) -> tuple[dict, dict]:
    """({algo: [t] share of runs with normalised score > tau}, {algo: [2, t] its interval});
    `scores`: the algorithms' normalised_scores when the caller has them already."""
    from rliable import library as rly

    scores = scores or {a: normalised_scores(environments, a, spec.tasks, spec.normalisation)
                        for a in spec.algorithms}
    with _seeded(spec.seed):
        return rly.create_performance_profile(scores, taus, reps=min(spec.reps, 2_000),
                                              confidence_interval_size=CONFIDENCE)


def draw_performance_profile(environments: dict, spec: AggregateSpec,
                             path: str | os.PathLike) -> str:
    """Draw the performance profile of `spec.algorithms` to the PNG `path` (written whole)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    import util

    scores = {a: normalised_scores(environments, a, spec.tasks, spec.normalisation)
              for a in spec.algorithms}
    values = np.concatenate([v.ravel() for v in scores.values()])
    taus = np.linspace(min(0.0, values.min()), max(1.0, values.max()), 101)  # [t]
    profiles, intervals = performance_profile(environments, spec, taus, scores)
    figure = Figure(figsize=(6.0, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for i, algo in enumerate(spec.algorithms):
        ax.plot(taus, profiles[algo], color=f"C{i}", linewidth=1.8, label=algo)
        ax.fill_between(taus, intervals[algo][0], intervals[algo][1], color=f"C{i}",
                        alpha=0.2, linewidth=0)
    ax.set_xlabel("normalised score tau (0 and 1: the low and high ends of each task)")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_title(f"Performance profile over {len(spec.tasks)} tasks "
                 f"({', '.join(spec.tasks)})", fontsize="small")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return str(util.save_png(figure, path))

