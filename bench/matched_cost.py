"""Choose td3_matched's multiplier: the TD3 whose frame costs what a STEVE-TD3 frame costs.

Run: `.venv/bin/python bench/matched_cost.py TUNING_ROOT [--tasks Hopper-v5,HalfCheetah-v5]
[--multipliers 3,4,6] [--seed 100] [--from 5000] [--to 10000]`. Reads the tuning runs'
`<TUNING_ROOT>/<task>/{steve_td3,td3_x<m>}.seed<seed>/log/*.greedy.csv` (queue B of
docs/benchmark/oracle_notes.md); writes nothing.

The rule, fixed in the notes before any run: a run's cost of a frame is its training hours
between its evaluations at `--from` and `--to` frames, divided by the frames between them (the
hours of the last evaluation episode ending at or before each frame count; the warm-up's random
frames before `--from` are left out). m is the multiplier whose cost is nearest STEVE-TD3's:
the smallest mean over the tasks of |log(cost_td3_xm / cost_steve_td3)|. Scores are not read.
Prints a table of costs (seconds per frame) and ratios, then `chosen_multiplier=<m>`.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class CostError(Exception):
    """A tuning run that is missing or too short; the message names it."""


def hours_at(greedy: np.ndarray, frames: int) -> float:
    """The hours of the last evaluation episode that ended at or before `frames`."""
    done = greedy[greedy[:, 2] <= frames]
    if not len(done):
        raise CostError(f"no evaluation ended at or before {frames} frames")
    return float(done[-1, 0])


def frame_cost(run: Path, start: int, end: int) -> float:
    """Seconds per frame between the evaluations at `start` and `end` frames (module doc)."""
    from reports import runs

    try:
        greedy = runs.load_greedy(run)  # [k, 4]: hours, epoch, frames, score
    except runs.RunReadError as e:
        raise CostError(str(e)) from e
    if greedy[:, 2].max() < end:
        raise CostError(f"{run} has evaluations only up to {int(greedy[:, 2].max())} frames, "
                        f"not {end}; let it finish its budget first.")
    first = greedy[greedy[:, 2] >= start]
    f0 = int(first[0, 2])
    f1 = int(greedy[greedy[:, 2] <= end][-1, 2])
    if f1 <= f0:
        raise CostError(f"{run} has no two evaluations between {start} and {end} frames.")
    return 3600.0 * (hours_at(greedy, f1) - hours_at(greedy, f0)) / (f1 - f0)


def choose(costs: dict[str, dict[str, float]], multipliers: list[int]) -> tuple[int, dict]:
    """costs[task][label] (labels steve_td3 and td3_x<m>) -> (m, mean |log ratio| per m)."""
    score = {m: float(np.mean([abs(math.log(c[f"td3_x{m}"] / c["steve_td3"]))
                               for c in costs.values()])) for m in multipliers}
    return min(multipliers, key=lambda m: (score[m], m)), score


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="the tuning runs' output root (holds <task>/ folders)")
    p.add_argument("--tasks", default="Hopper-v5,HalfCheetah-v5")
    p.add_argument("--multipliers", default="3,4,6")
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--from", dest="start", type=int, default=5000)
    p.add_argument("--to", dest="end", type=int, default=10000)
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    multipliers = [int(m) for m in args.multipliers.split(",") if m]
    labels = ["steve_td3"] + [f"td3_x{m}" for m in multipliers]
    costs: dict[str, dict[str, float]] = {}
    try:
        for task in tasks:
            costs[task] = {label: frame_cost(args.root / task / f"{label}.seed{args.seed}",
                                             args.start, args.end) for label in labels}
    except CostError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m, score = choose(costs, multipliers)
    print(f"Seconds per frame between {args.start} and {args.end} frames, seed {args.seed} "
          f"(ratio to steve_td3 in brackets):\n")
    print("| task | " + " | ".join(labels) + " |")
    print("|---" * (len(labels) + 1) + "|")
    for task, c in costs.items():
        cells = [f"{c['steve_td3']:.4f}"] + [
            f"{c[f'td3_x{k}']:.4f} ({c[f'td3_x{k}'] / c['steve_td3']:.2f})" for k in multipliers]
        print(f"| {task} | " + " | ".join(cells) + " |")
    print("\nmean |log(cost ratio)| over the tasks: "
          + ", ".join(f"x{k}: {score[k]:.3f}" for k in multipliers))
    print(f"chosen_multiplier={m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
