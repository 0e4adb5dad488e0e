"""The numbers of a benchmark report: each run's scores, and their spread and comparisons over
seeds.

Run by the report's writer (reports/report.py) in the process that writes a report; reads one
run folder at a time (reports/runs.py) and writes nothing. How each number is defined:

- score of a run at frame count F (`reference.score_at`): the mean return of its greedy
  evaluation episodes that ended at a frame count in ((1 - WINDOW) * F, F] (the last 10% of
  frames before F); no value when no episode ended there (the run did not get that far, or was
  not evaluated in that window), or fewer than the benchmark's `min_episodes`;
- frames to the threshold T: the smallest frame count F at which some episode ended and the
  run's score at F (as above) is >= T; "not reached" otherwise;
- mean score over the budget: the mean of the run's scores (as above) at CURVE_POINTS evenly
  spaced frame counts up to the budget, over those that have a value: the area under its
  learning curve divided by the budget, one number for its sample efficiency; none for a run
  that has not finished its budget (the mean over the part it covered is not comparable);
- hours: the largest `hours` of the run's greedy.csv, i.e. the training wall-clock time up to its
  last evaluation (time spent stopped between an interruption and the resume is not counted).

Across the seeds of one (environment, algorithm): mean, standard deviation (numpy's, ddof 0),
min and max over the runs that have a value (`spread`). Two algorithms on one environment are
compared by the difference of their mean scores over the budget, with the two-sided
permutation p-value of that difference over seeds (`pairs`; exact over every relabelling when
there are few).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import util
from reports import runs
from reports.benchmark import BenchmarkError
from reports.reference import WINDOW, score_at

CURVE_POINTS = 20  # frame counts averaged by the mean score over the budget


def frames_to_threshold(data: np.ndarray, threshold: float,
                        window: float = WINDOW, min_episodes: int = 1) -> int | None:
    """The first frame count at which an episode ended and the run's score there (score_at) is
    >= `threshold`; None when the run never got there."""
    for frames in np.unique(data[:, runs.FRAMES]):  # sorted
        value = score_at(data, float(frames), window, min_episodes)
        if value is not None and value >= threshold:
            return int(frames)
    return None


def mean_score(data: np.ndarray, total_frames: int, points: int = CURVE_POINTS,
               window: float = WINDOW, min_episodes: int = 1) -> float | None:
    """The mean of score_at at `points` evenly spaced frame counts up to `total_frames`, over
    those that have a value; None when none has (a finished run's: see summarize_run)."""
    values = [score_at(data, total_frames * (i + 1) / points, window, min_episodes)
              for i in range(points)]
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def permutation_p(a: Sequence[float], b: Sequence[float], exact_limit: int = 200_000,
                  draws: int = 20_000, seed: int = 0) -> float:
    """Two-sided permutation p-value of mean(a) - mean(b): the share of relabellings of the
    pooled values whose difference is at least as large in size. Exact when there are at most
    `exact_limit` relabellings, else `draws` random ones (seeded)."""
    pooled = np.asarray(list(a) + list(b), np.float64)
    n, k = len(pooled), len(a)
    if k == 0 or k == n:
        raise ValueError("both groups need at least one value")
    observed = abs(pooled[:k].mean() - pooled[k:].mean()) - 1e-9 * (1.0 + np.abs(pooled).max())
    total = pooled.sum()

    def extreme(first: np.ndarray) -> bool:
        s = pooled[first].sum()
        return abs(s / k - (total - s) / (n - k)) >= observed

    if math.comb(n, k) <= exact_limit:
        splits = [np.asarray(c) for c in itertools.combinations(range(n), k)]
    else:
        rng = np.random.default_rng(seed)
        splits = [rng.permutation(n)[:k] for _ in range(draws)]
    return sum(extreme(c) for c in splits) / len(splits)


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """The numbers of one run that the report uses."""

    path: Path
    env: str
    algo: str
    seed: int | None
    finished: bool  # state/finished.json says it reached its budget
    last_frames: int  # frame count of its last evaluation episode
    episodes: int
    hours: float
    scores: tuple[float | None, ...]  # score_at each mark
    mean_score: float | None  # mean_score over the budget
    to_threshold: int | None  # frames_to_threshold (None also when no threshold)
    # the committed summary a carried run's numbers come from (path is that summary: the run
    # has no folder here, and finished, last_frames, episodes and hours mean nothing); None for
    # a run of this benchmark
    carried_from: str | None = None
    config: str | None = None  # a carried run's config, as its summary names it


def _seed_of(run_dir: Path) -> int | None:
    hps = util.read_json(run_dir / "log" / "hps.json")
    if isinstance(hps, dict) and isinstance(hps.get("seed"), int):
        return hps["seed"]
    name = run_dir.name
    suffix = name.rpartition(".seed")[2]
    return int(suffix) if ".seed" in name and suffix.isdigit() else None


def summarize_run(run_dir: str | os.PathLike, marks: Sequence[int],
                  thresholds: dict[str, float], total_frames: int | None = None,
                  window: float = WINDOW, min_episodes: int = 1) -> RunSummary:
    """Read one run folder and compute its report numbers. Raises BenchmarkError when the run
    has no evaluations (or an unreadable greedy.csv)."""
    run_dir = Path(run_dir)
    try:
        data = runs.load_greedy(run_dir)  # [k, 4]
    except runs.RunReadError as e:
        raise BenchmarkError(str(e)[0].upper() + str(e)[1:]) from None
    info = runs.run_info(run_dir)
    finished_info = util.read_json(run_dir / "state" / "finished.json")
    finished = isinstance(finished_info, dict) and (
        total_frames is None or int(finished_info.get("total_frames", 0)) >= total_frames)
    threshold = thresholds.get(info.env)
    last_frames = int(data[:, runs.FRAMES].max())
    # An unfinished run has no score at a mark it has not reached: that window is incomplete.
    # Nor has it a mean score over the budget: the mean over the part it has covered would not
    # be comparable with a finished run's (and would enter the pairs and the aggregate).
    reached = None if finished else last_frames
    return RunSummary(
        path=run_dir, env=info.env, algo=info.algo, seed=_seed_of(run_dir), finished=finished,
        last_frames=last_frames, episodes=len(data), hours=float(data[:, runs.HOURS].max()),
        scores=tuple(score_at(data, m, window, min_episodes, reached) for m in marks),
        mean_score=(mean_score(data, total_frames, window=window, min_episodes=min_episodes)
                    if total_frames is not None and finished else None),
        to_threshold=(frames_to_threshold(data, threshold, window, min_episodes)
                      if threshold is not None else None))


# ------------------------------------------------------------------------------ over seeds


def spread(values: Sequence[float | None]) -> dict | None:
    """n, mean, std (ddof 0), min and max of the values that are not None; None if none."""
    present = np.array([v for v in values if v is not None], dtype=np.float64)
    if len(present) == 0:
        return None
    return {"n": len(present), "mean": float(present.mean()), "std": float(present.std()),
            "min": float(present.min()), "max": float(present.max())}


def group(summaries: Sequence[RunSummary]) -> dict[tuple[str, str], list[RunSummary]]:
    """{(env, algo): runs sorted by seed}, keys sorted."""
    groups: dict[tuple[str, str], list[RunSummary]] = {}
    for s in summaries:
        groups.setdefault((s.env, s.algo), []).append(s)
    return {k: sorted(v, key=lambda s: (s.seed is None, s.seed, str(s.path)))
            for k, v in sorted(groups.items())}


def pairs(groups: dict[tuple[str, str], list[RunSummary]], env: str) -> list[dict]:
    """Each pair of algorithms on `env`, in table order: the difference of their mean scores over
    the budget (averaged over seeds, A - B) and its two-sided permutation p-value over seeds."""
    algos = [(algo, [r.mean_score for r in runs if r.mean_score is not None])
             for (e, algo), runs in groups.items() if e == env]
    out = []
    for (name_a, a), (name_b, b) in itertools.combinations(algos, 2):
        if a and b:
            out.append({"a": name_a, "b": name_b,
                        "diff": float(np.mean(a)) - float(np.mean(b)),
                        "p": permutation_p(a, b), "n_a": len(a), "n_b": len(b)})
    return out
