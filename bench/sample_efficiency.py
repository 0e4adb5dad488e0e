"""Sample-efficiency benchmark: seeded runs of several configs through the sweep, then a report.

    .venv/bin/python bench/sample_efficiency.py --preset cpu          # ~2 h on a 2-core CPU
    .venv/bin/python bench/sample_efficiency.py --preset gpu --address auto   # the paper's grid
    .venv/bin/python bench/sample_efficiency.py CONFIG [CONFIG ...] --seeds 3 \
        --total-frames 30000 [--checkpoints-at 10000,20000,30000] [--threshold Hopper-v5=1000]
    .venv/bin/python bench/sample_efficiency.py --preset cpu --report-only   # report only
    .venv/bin/python bench/sample_efficiency.py --preset cpu --report-only --partial
        # report the runs that have evaluations so far; list the rest as pending

Run by hand on the machine that drives the sweep; it trains nothing itself. Every (config, seed)
pair is one `master.py --seed S --total-frames N` run started by `sweep.run_sweep` (a local Ray
instance by default, or the cluster at `--address`), as many at once as the CPUs allow. The same
command again skips finished runs and resumes interrupted ones (sweep.py decides, per run).
Seeded runs seed the environments, network initialisation and replay sampling (master.py).

Reads, per run folder `<output_root>/<ENV>/<EXPERIMENT>.seed<S>/`: `log/*.greedy.csv` (one line
per greedy evaluation episode: hours,epoch,frames,score), `log/hps.json` (the environment's name)
and `state/finished.json` (the run reached its budget). Writes, besides the run folders that
sweep.py and master.py write: the report `--report` (markdown, written whole to a temporary name
and renamed) and its learning-curve figures beside it, `<report stem>_curves_frames.png` and
`<report stem>_curves_hours.png` (plot.py), linked from the report by relative paths, and the
machine-readable summary `<report stem>.json` (`summary_json`; written whole and renamed too).

How the report's numbers are defined (also written into the report):
- score of a run at frame count F: the mean return of its greedy evaluation episodes that ended
  at a frame count in [(1 - WINDOW) * F, F] (the last 10% of frames before F); no value when no
  episode ended there (the run did not get that far, or was not evaluated in that window);
- frames to the threshold T: the smallest frame count F at which some episode ended and the
  run's score at F (as above) is >= T; "not reached" otherwise;
- mean score over the budget: the mean of the run's scores (as above) at CURVE_POINTS evenly
  spaced frame counts up to the budget, over those that have a value: the area under its
  learning curve divided by the budget, one number for its sample efficiency; none for a run
  that has not finished its budget (the mean over the part it covered is not comparable);
- hours: the largest `hours` of the run's greedy.csv, i.e. the training wall-clock time up to its
  last evaluation (time spent stopped between an interruption and the resume is not counted).
Across the seeds of one (environment, algorithm): mean, standard deviation (numpy's, ddof 0),
min and max over the runs that have a value. Two algorithms on one environment are compared by
the difference of their mean scores over the budget, with the two-sided permutation p-value of
that difference over seeds (exact over every relabelling when there are few).

Presets are data (PRESETS below): the config list, seeds, frame budget, table frame counts and
thresholds; paths in a preset are relative to the project root.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import itertools
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":  # run as a script: the project's modules live one folder up
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import config as config_lib  # noqa: E402
import plot  # noqa: E402
import sweep  # noqa: E402
import util  # noqa: E402
from errors import UserError  # noqa: E402
from reports import aggregate, reference  # noqa: E402

WINDOW = reference.WINDOW  # a score at F averages the episodes in the last 10% of frames before F
CURVE_POINTS = 20  # frame counts averaged by the mean score over the budget
DEFAULT_MARKS = 4  # table columns when --checkpoints-at is not given: N/4, N/2, 3N/4, N
REPORT_NAME = "sample_efficiency.md"  # default report, in the output root


class BenchmarkError(UserError):
    """A problem with the benchmark's input or runs; the message is one sentence with the fix."""

    exit_status = 2  # of the command line


class RunsFailed(BenchmarkError):
    """Some runs failed for good (after the sweep's retries); no report was written."""

    exit_status = 1


class RunsStopped(BenchmarkError):
    """Some runs were stopped (Ctrl-C) before their budget; no report was written."""

    exit_status = 130


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """What to run and how to report it."""

    name: str
    configs: tuple[str, ...]  # config files
    seeds: int  # seeds 0..seeds-1
    total_frames: int  # budget of every run
    marks: tuple[int, ...]  # frame counts of the score table
    thresholds: dict[str, float]  # environment name -> score
    output_root: str
    report: str  # markdown path
    command: str  # how to reproduce it, shown in the report
    max_parallel: int | None = None
    # environment name -> (its budget, its table frame counts), where they differ from
    # total_frames and marks (each environment's runs get their own budget)
    budgets: dict[str, tuple[int, tuple[int, ...]]] = dataclasses.field(default_factory=dict)
    first_seed: int = 0  # seeds first_seed .. first_seed + seeds - 1
    min_episodes: int = 1  # a score needs at least this many episodes in its window
    # (algorithm label, backbone label) that the summary's "headline" names; None: none
    headline: tuple[str, str] | None = None
    # a markdown file written by hand (what the runs are for, how the configs were chosen,
    # which goals were met), put into the report after its first paragraph; None: none
    notes: str | None = None
    # the committed copies of the report's runs (reports/reference.py's layout): written with every
    # report, and read for a run whose folder is not under output_root; None: not kept
    reference_runs: str | None = None
    # committed summaries (.json) whose environments join this report's summary unchanged, for
    # the aggregate across tasks (their runs were reported there)
    carried: tuple[str, ...] = ()
    # the evidence across tasks (reports/aggregate.py); None: none
    aggregate: aggregate.AggregateSpec | None = None
    # a markdown file (README.md) showing the summary's headline_table between the lines
    # `<!-- NAME table ...` and `<!-- end of NAME table -->`: rewritten with every report;
    # None: none
    readme: str | None = None

    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def budget(self, env: str) -> tuple[int, tuple[int, ...]]:
        """(frame budget, table frame counts) of an environment."""
        return self.budgets.get(env, (self.total_frames, self.marks))


def _cpu_configs(envs: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"config/experiments/benchmark/cpu/{env}/{algo}.json"
                 for env in envs for algo in ("ddpg", "mve_tdk", "steve"))


# The paper's eight environments, with its kept runs (docs/configs.md: goodruns/<env>/).
_GOODRUNS = {"halfcheetah": ("ddpg3", "mve_tdk1", "steve3"),
             "hopper": ("ddpg0", "mve_tdk0", "steve3"),
             "walker2d": ("ddpg1", "mve_tdk1", "steve1"),
             "swimmer": ("ddpg0", "mve_tdk3", "steve1"),
             "humanoid": ("ddpg3", "mve_tdk3", "steve1"),
             "hardcore": ("ddpg2", "mve_tdk2", "steve1"),
             "rshum": ("ddpg2", "mve_tdk3", "steve1"),
             "flagrun": ("ddpg3", "mve_tdk0", "steve0")}

# cpu_win's algorithms, as (setup folder, config name): the headline STEVE-TD3 and its backbone
# TD3 (config/experiments/benchmark/cpu_win/), the paper-faithful DDPG and STEVE (.../cpu/).
_CPU_WIN_ALGOS = (("cpu_win", "steve_td3"), ("cpu_win", "td3"), ("cpu", "ddpg"), ("cpu", "steve"))

# Each preset: keyword arguments of Benchmark (name and command are filled in).
PRESETS: dict[str, dict] = {
    # A CPU machine (2 cores here): 3 algorithms x 2 tasks x 3 seeds = 18 runs, one at a time
    # (a run's processes take both cores). Sized from speeds measured with cpu.json on the
    # shared 2-core machine: STEVE on InvertedPendulum ~44 frames/s (greedy 1000 at ~13k
    # frames), DDPG ~130 frames/s (1000 at ~14k); STEVE on Hopper 34-36 frames/s under a load
    # of 11-12 (greedy ~150 up to 15k frames, then 380 at 16k, 600 at 17-18k, 750 at 20k).
    # At 18k frames, counting mve_tdk as slow as STEVE and 30 s start-up per run: per seed
    # 17 min (InvertedPendulum) + 17-22 min (Hopper, quiet to loaded), so 1.7-2.0 h in all.
    "cpu": dict(
        configs=_cpu_configs(("invertedpendulum", "hopper")),
        seeds=3,
        total_frames=18_000,
        marks=(6_000, 12_000, 18_000),
        thresholds={"InvertedPendulum-v5": 900.0, "Hopper-v5": 500.0},
        output_root="output/benchmark/cpu",
        report="docs/benchmark/cpu.md",
    ),
    # The model under stress (docs/benchmark/cpu_investigation.md): rollouts of H = 10 instead
    # of 3 on Hopper, where a small model's error compounds; h10_mve is MVE without the TD-k
    # trick (Q trained on the real row only, as STEVE's Q is), to tell the two differences
    # between MVE-TD-k and STEVE apart. DDPG is the cpu preset's runs (same config, same output
    # root: finished runs are not run again).
    "cpu_h10": dict(
        configs=("config/experiments/benchmark/cpu/hopper/ddpg.json",
                 "config/experiments/benchmark/cpu_h10/hopper/h10_mve_tdk.json",
                 "config/experiments/benchmark/cpu_h10/hopper/h10_mve.json",
                 "config/experiments/benchmark/cpu_h10/hopper/h10_steve.json"),
        seeds=3,
        total_frames=18_000,
        marks=(6_000, 12_000, 18_000),
        thresholds={"Hopper-v5": 500.0},
        output_root="output/benchmark/cpu",
        report="docs/benchmark/cpu_h10.md",
    ),
    # The paper's setting: its sizes (goodruns configs), the eight environments, 1M frames.
    # Thresholds are levels of clear progress chosen for this table, not the paper's numbers.
    "gpu": dict(
        configs=tuple(f"config/experiments/goodruns/{env}/{name}.json"
                      for env, names in _GOODRUNS.items() for name in names),
        seeds=3,
        total_frames=1_000_000,
        marks=(100_000, 250_000, 500_000, 1_000_000),
        thresholds={"HalfCheetah-v5": 4000.0, "Hopper-v5": 2500.0, "Walker2d-v5": 2500.0,
                    "Swimmer-v5": 100.0, "Humanoid-v5": 2000.0,
                    "BipedalWalkerHardcore-v3": 0.0, "HumanoidBulletEnv-v0": 1000.0,
                    "HumanoidFlagrunBulletEnv-v0": 500.0},
        output_root="output/benchmark/gpu",
        report="docs/benchmark/gpu.md",
    ),
    # Issue 14's evidence: STEVE on the TD3 backbone (config/algos/steve_td3.json with the
    # cpu2 setup; the headline), the same config without the model (its backbone alone), and
    # the paper-faithful DDPG and STEVE on the cpu setup for reference. Frozen from variant t2
    # of the tuning on seed 100 (learning rate 1e-3, 4 updates per frame for both learners,
    # H = 3); every variant tried is in config/experiments/benchmark/cpu_win_tuning/ and
    # docs/benchmark/cpu_win_tuning.md. Cost decides the sizes: STEVE evaluates the target Q on
    # K M (H+1) B rows per update (64 B at H = 3), so its policy update grows with the square of
    # the Q width; with 2 hidden layers of 256, batch 256 and H = 5 it took 80 ms (hours per
    # 60k-frame run), with cpu2's 2 x 128, batch 128 and H = 3 about 7.5 ms (in-process, one
    # thread, on the loaded 2-core machine).
    # InvertedPendulum-v5 to 20k frames (marks every 1,000), Hopper-v5 to 60k (every 5,000);
    # a score needs 5 episodes in its window.
    # Held-out seeds 0-4; tune with --first-seed 100 (the report then goes to the output root
    # unless --report is given). Summary beside the report: docs/benchmark/cpu_win.json.
    "cpu_win": dict(
        configs=tuple(f"config/experiments/benchmark/{setup}/{env}/{algo}.json"
                      for env in ("invertedpendulum", "hopper")
                      for setup, algo in _CPU_WIN_ALGOS),
        seeds=5,
        total_frames=60_000,
        marks=tuple(range(5_000, 60_001, 5_000)),
        budgets={"InvertedPendulum-v5": (20_000, tuple(range(1_000, 20_001, 1_000))),
                 "Hopper-v5": (60_000, tuple(range(5_000, 60_001, 5_000)))},
        thresholds={"InvertedPendulum-v5": 900.0, "Hopper-v5": 1500.0},
        min_episodes=5,
        headline=("steve_td3", "td3"),
        notes="docs/benchmark/cpu_win_notes.md",
        output_root="output/benchmark/cpu_win",
        report="docs/benchmark/cpu_win.md",
        reference_runs="docs/benchmark/runs/cpu_win",
    ),
    # Issue 24's evidence across tasks: the frozen cpu_win configs, unchanged (no per-task
    # tuning), on two more of the paper's tasks, HalfCheetah-v5 and Walker2d-v5, 60k frames,
    # held-out seeds 0-4; the thresholds are levels of clear progress set before any of these
    # runs had a result. InvertedPendulum-v5 and Hopper-v5 join the aggregate from
    # cpu_win.json. Normalisation per task: 0 = a uniformly random policy (the mean return of
    # 100 episodes, `python bench/random_policy.py ENV --episodes 100`), 1 = TD3's published
    # score after 1M frames (Fujimoto et al. 2018, Table 1: max average return over 10 trials,
    # on the -v1 tasks).
    "cpu_win4": dict(
        configs=tuple(f"config/experiments/benchmark/{setup}/{env}/{algo}.json"
                      for env in ("halfcheetah", "walker2d")
                      for setup, algo in _CPU_WIN_ALGOS),
        seeds=5,
        total_frames=60_000,
        marks=tuple(range(5_000, 60_001, 5_000)),
        thresholds={"HalfCheetah-v5": 2000.0, "Walker2d-v5": 1000.0},
        min_episodes=5,
        headline=("steve_td3", "td3"),
        notes="docs/benchmark/cpu_win4_notes.md",
        output_root="output/benchmark/cpu_win4",
        report="docs/benchmark/cpu_win4.md",
        reference_runs="docs/benchmark/runs/cpu_win4",
        carried=("docs/benchmark/cpu_win.json",),
        readme="README.md",
        aggregate=aggregate.AggregateSpec(
            tasks=("InvertedPendulum-v5", "Hopper-v5", "HalfCheetah-v5", "Walker2d-v5"),
            normalisation={"InvertedPendulum-v5": (5.23, 1000.0),
                           "Hopper-v5": (16.67, 3564.07),
                           "HalfCheetah-v5": (-287.82, 9636.95),
                           "Walker2d-v5": (1.77, 4682.82)},
            pairs=(("steve_td3", "td3"), ("steve", "ddpg")),
            algorithms=("steve_td3", "td3", "steve", "ddpg")),
    ),
    # A smoke test of the machinery: tiny networks, a few hundred frames (about a minute).
    "tiny": dict(
        configs=("tests/configs/tiny_ddpg.json", "tests/configs/tiny_steve.json"),
        seeds=2,
        total_frames=300,
        marks=(150, 300),
        thresholds={"InvertedPendulum-v5": 10.0},
        output_root="output/benchmark/tiny",
        report="output/benchmark/tiny/sample_efficiency.md",
    ),
}


def preset(name: str) -> Benchmark:
    """The named preset, with its paths resolved against the project root."""
    if name not in PRESETS:
        raise BenchmarkError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    p = dict(PRESETS[name])
    p["configs"] = tuple(str(ROOT / c) for c in p["configs"])
    p["output_root"] = str(ROOT / p["output_root"])
    p["report"] = str(ROOT / p["report"])
    if p.get("notes"):
        p["notes"] = str(ROOT / p["notes"])
    for key in ("reference_runs", "readme"):
        if p.get(key):
            p[key] = str(ROOT / p[key])
    p["carried"] = tuple(str(ROOT / c) for c in p.get("carried", ()))
    p["thresholds"] = dict(p["thresholds"])
    p["budgets"] = dict(p.get("budgets", {}))
    return Benchmark(name=name, command=f"python bench/sample_efficiency.py --preset {name}",
                     **p)


def default_marks(total_frames: int, count: int = DEFAULT_MARKS) -> tuple[int, ...]:
    """`count` evenly spaced frame counts ending at the budget: 30000 -> 7500, ..., 30000."""
    return tuple(sorted({int(round(total_frames * (i + 1) / count)) for i in range(count)}))


# ------------------------------------------------------------------------------ one run


score_at = reference.score_at  # the report's score of a run at a frame count


def frames_to_threshold(data: np.ndarray, threshold: float,
                        window: float = WINDOW, min_episodes: int = 1) -> int | None:
    """The first frame count at which an episode ended and the run's score there (score_at) is
    >= `threshold`; None when the run never got there."""
    for frames in np.unique(data[:, plot.FRAMES]):  # sorted
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
        data = plot.load_greedy(run_dir)  # [k, 4]
    except plot.PlotError as e:
        raise BenchmarkError(str(e)[0].upper() + str(e)[1:]) from None
    info = plot.run_info(run_dir)
    finished_info = util.read_json(run_dir / "state" / "finished.json")
    finished = isinstance(finished_info, dict) and (
        total_frames is None or int(finished_info.get("total_frames", 0)) >= total_frames)
    threshold = thresholds.get(info.env)
    last_frames = int(data[:, plot.FRAMES].max())
    # An unfinished run has no score at a mark it has not reached: that window is incomplete.
    # Nor has it a mean score over the budget: the mean over the part it has covered would not
    # be comparable with a finished run's (and would enter the pairs and the aggregate).
    reached = None if finished else last_frames
    return RunSummary(
        path=run_dir, env=info.env, algo=info.algo, seed=_seed_of(run_dir), finished=finished,
        last_frames=last_frames, episodes=len(data), hours=float(data[:, plot.HOURS].max()),
        scores=tuple(score_at(data, m, window, min_episodes, reached) for m in marks),
        mean_score=(mean_score(data, total_frames, window=window, min_episodes=min_episodes)
                    if total_frames is not None and finished else None),
        to_threshold=(frames_to_threshold(data, threshold, window, min_episodes)
                      if threshold is not None else None))


# ------------------------------------------------------------------------------ the report


def spread(values: Sequence[float | None]) -> dict | None:
    """n, mean, std (ddof 0), min and max of the values that are not None; None if none."""
    present = np.array([v for v in values if v is not None], dtype=np.float64)
    if len(present) == 0:
        return None
    return {"n": len(present), "mean": float(present.mean()), "std": float(present.std()),
            "min": float(present.min()), "max": float(present.max())}


def _num(x: float, digits: int | None = None) -> str:
    """Scores: no decimal from 100 up, one below (or `digits`)."""
    if digits is None:
        digits = 0 if abs(x) >= 100 else 1
    return f"{x:.{digits}f}"


def _frames(n: float) -> str:
    """Frame counts with three significant digits: 500, 7.5k, 17.8k, 1.25M."""
    if abs(n) >= 1e6:
        return f"{n / 1e6:.3g}M"
    if abs(n) >= 1e3:
        return f"{n / 1e3:.3g}k"
    return f"{n:.0f}"


def _cell(values: Sequence[float | None], fmt: Callable[[float], str] | None = None) -> str:
    """`mean ± std (min–max)`, plus `[n=k]` when only k of the values are present. One number
    format for the whole cell: no decimal when its largest number is 100 or more."""
    s = spread(values)
    if s is None:
        return "-"
    if fmt is None:
        digits = 0 if max(abs(s["mean"]), abs(s["min"]), abs(s["max"])) >= 100 else 1
        fmt = functools.partial(_num, digits=digits)
    text = f"{fmt(s['mean'])} ± {fmt(s['std'])} ({fmt(s['min'])}–{fmt(s['max'])})"
    if s["n"] < len(values):
        text += f" [n={s['n']}]"
    return text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def group(summaries: Sequence[RunSummary]) -> dict[tuple[str, str], list[RunSummary]]:
    """{(env, algo): runs sorted by seed}, keys sorted."""
    groups: dict[tuple[str, str], list[RunSummary]] = {}
    for s in summaries:
        groups.setdefault((s.env, s.algo), []).append(s)
    return {k: sorted(v, key=lambda s: (s.seed is None, s.seed, str(s.path)))
            for k, v in sorted(groups.items())}


def format_report(bench: Benchmark, summaries: Sequence[RunSummary],
                  figures: Sequence[str | os.PathLike], window: float = WINDOW,
                  when: str | None = None, notes: str = "",
                  pending: Sequence[str | os.PathLike] = (),
                  summary: dict | None = None, commit: str | None = None) -> str:
    """The markdown report (figures given as paths relative to the report's folder; `notes`:
    markdown put in after the first paragraph; `pending`: run folders not started or without an
    evaluation yet, left out of every number; `summary`: the summary_json written beside it,
    whose carried environments and aggregate block get a section; `commit`: the code's commit,
    named in the first paragraph (default: the checkout's now))."""
    groups = group(summaries)
    when = when or datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    commit = commit or reference.current_commit() or "unknown (not a git checkout)"
    unfinished = [s for s in summaries if not s.finished]
    lines = [f"# Sample efficiency: {bench.name}", "",
             f"Produced by `{bench.command}` at commit `{commit}` on {when} from "
             f"{len(summaries)} run(s) of "
             f"{len(bench.configs)} config(s) x {bench.seeds} seed(s) "
             f"({_seed_text(bench)}), {_budget_text(bench, summaries)} (runs under "
             f"`{bench.output_root}`).", ""]
    if unfinished:
        lines += [f"**{len(unfinished)} run(s) have not reached the budget yet** (marked "
                  f"`unfinished` below); run the same command again to resume them.", ""]
    if pending:
        lines += [f"**{len(pending)} run(s) have not started or have no evaluation yet**; they "
                  f"are left out of every number below (a partial report):", ""]
        lines += [f"- `{_display(p)}`" for p in pending] + [""]
    if notes.strip():
        lines += [notes.strip(), ""]
    lines += ["Configs:", ""] + [f"- `{_display(c)}`" for c in bench.configs] + [""]

    lines += ["## Greedy score at fixed frame counts", "",
              f"Score of one run at F frames: the mean return of its greedy evaluation "
              f"episodes that ended after {1 - window:g} F and by F frames. Each cell: mean ± "
              f"standard deviation over seeds (min–max); `[n=k]` when only k seeds have a value "
              f"there (the others stopped earlier or had no evaluation in that window)"
              + (f"; a score needs at least {bench.min_episodes} episodes in its window"
                 if bench.min_episodes > 1 else "") + ".", ""]
    # one table, or one per environment when their frame counts differ
    tables: dict[tuple[int, ...], list[str]] = {}
    for env in sorted({env for env, _ in groups}):
        tables.setdefault(bench.budget(env)[1], []).append(env)
    for marks, table_envs in tables.items():
        header = ["environment", "algorithm", "seeds"] + [_frames(m) for m in marks]
        rows = [[env, algo, str(len(runs))]
                + [_cell([r.scores[i] for r in runs]) for i in range(len(marks))]
                for (env, algo), runs in groups.items() if env in table_envs]
        lines += _table(header, rows) + [""]

    lines += ["## Frames to reach the threshold", ""]
    envs = sorted({env for env, _ in groups})
    with_threshold = [env for env in envs if env in bench.thresholds]
    if not with_threshold:
        lines += ["No threshold was given (use `--threshold ENV=SCORE`).", ""]
    else:
        lines += ["The first frame count at which a run's score (as defined above) is at least "
                  "the threshold. `reached`: seeds that got there; mean over those seeds; per "
                  "seed in seed order, `-` for not reached.", ""]
        rows = []
        for (env, algo), runs in groups.items():
            if env not in bench.thresholds:
                continue
            hits = [r.to_threshold for r in runs]
            s = spread(hits)
            rows.append([env, algo, _num(bench.thresholds[env]),
                         f"{s['n'] if s else 0}/{len(runs)}",
                         _frames(s["mean"]) if s else "-",
                         ", ".join(_frames(h) if h is not None else "-" for h in hits)])
        lines += _table(["environment", "algorithm", "threshold", "reached", "mean frames",
                         "per seed"], rows) + [""]

    lines += ["## Mean score over the budget", "",
              f"A run's mean score over the budget: the mean of its scores (as above) at "
              f"{CURVE_POINTS} evenly spaced frame counts up to the budget "
              f"(those with a value), i.e. the area under its learning curve divided by the "
              f"budget. Mean ± std (min–max) over seeds.", ""]
    rows = [[env, algo, str(len(runs)), _cell([r.mean_score for r in runs])]
            for (env, algo), runs in groups.items()]
    lines += _table(["environment", "algorithm", "seeds", "mean score"], rows) + [""]
    lines += ["Pairwise: the difference of two algorithms' mean scores over the budget (averaged "
              "over seeds) and its two-sided permutation p-value over seeds: the share of the "
              "ways to relabel the runs as one algorithm or the other that give a difference at "
              "least as large. Small p: the seeds separate the two; with n seeds each, p cannot "
              "go below 2 / C(2n, n) (0.1 for 3 seeds, 0.002 for 6).", ""]
    rows = [[env, pair["a"], pair["b"], _num(pair["diff"]), f"{pair['p']:.3f}",
             f"{pair['n_a']} / {pair['n_b']}"]
            for env in envs for pair in pairs(groups, env)]
    lines += _table(["environment", "A", "B", "A - B", "p", "seeds"], rows) + [""]
    if summary is not None:
        profile = [f for f in figures if str(f).endswith("_profile.png")]
        lines += (_carried_section(summary, Path(bench.report).parent)
                  + _aggregate_section(summary, profile))
        figures = [f for f in figures if f not in profile]

    lines += ["## Wall-clock time", "",
              "Hours of training per run (the largest `hours` in its greedy.csv: wall-clock "
              "time up to its last evaluation, not counting time stopped between an interruption "
              "and its resume); mean ± std (min–max) over seeds.", ""]
    rows = [[env, algo, _cell([r.hours for r in runs], lambda h: f"{h:.2f}"),
             _frames(min(r.last_frames for r in runs))]
            for (env, algo), runs in groups.items()]
    lines += _table(["environment", "algorithm", "hours", "last evaluation (fewest frames)"],
                    rows) + [""]
    lines += _frame_cost(bench, groups)

    lines += ["## Learning curves", "",
              "Line: mean over seeds; shaded: min–max across seeds (plot.py).", ""]
    for fig in figures:
        kind = "hours" if str(fig).endswith("_hours.png") else "frames"
        lines += [f"![greedy score against {kind}]({Path(fig).as_posix()})", ""]

    lines += ["## Runs", ""]
    rows = [[env, algo, str(r.seed) if r.seed is not None else "-",
             "done" if r.finished else "unfinished", _frames(r.last_frames), str(r.episodes),
             f"{r.hours:.2f}", f"`{_display(r.path)}`"]
            for (env, algo), runs in groups.items() for r in runs]
    lines += _table(["environment", "algorithm", "seed", "state", "last evaluation",
                     "episodes", "hours", "folder"], rows)
    return "\n".join(lines) + "\n"


def _frame_cost(bench: Benchmark, groups: dict[tuple[str, str], list[RunSummary]]) -> list[str]:
    """A line per environment: what a frame of the headline algorithm cost against a frame of
    its backbone (mean over seeds of hours per frame at the last evaluation)."""
    if bench.headline is None:
        return []
    algo, backbone = bench.headline
    parts = []
    for env in sorted({env for env, _ in groups}):
        a, b = groups.get((env, algo)), groups.get((env, backbone))
        if not a or not b:
            continue
        cost = [float(np.mean([r.hours / max(r.last_frames, 1) for r in runs]))
                for runs in (a, b)]
        if cost[1] > 0:
            parts.append(f"{env} {cost[0] / cost[1]:.1f}x ({cost[0] * 3.6e6:.0f} against "
                         f"{cost[1] * 3.6e6:.0f} ms per frame)")
    if not parts:
        return []
    return [f"What a frame costs on this machine: a {algo} frame against a {backbone} frame "
            f"(wall-clock time per frame up to the last evaluation, mean over seeds, on the "
            f"machine and with the parallelism the runs had): " + "; ".join(parts) + ".", ""]


def _carried_section(summary: dict, report_dir: Path) -> list[str]:
    """The environments carried from earlier reports: their mean scores over the budget (links
    relative to `report_dir`, the report's folder)."""
    carried = {env: block for env, block in summary["environments"].items()
               if "carried_from" in block}
    if not carried:
        return []
    lines = ["## Tasks carried from earlier reports", "",
             "These environments' runs were reported before; their per-seed numbers are copied "
             "unchanged into this report's summary for the aggregate below. Mean score over the "
             "budget, mean ± std (min–max) over seeds, and the pairwise p-values of their own "
             "report.", ""]
    rows = []
    for env, block in sorted(carried.items()):
        for algo, entry in block["algorithms"].items():
            values = [s.get("mean_score") for s in entry["seeds"].values()]
            rows.append([env, algo, str(len(values)), _cell(values),
                         f"[{Path(block['carried_from']).stem}]"
                         f"({_carried_link(block, report_dir)})"])
    lines += _table(["environment", "algorithm", "seeds", "mean score", "from"], rows) + [""]
    rows = [[env, p["a"], p["b"], _num(p["diff"]), f"{p['p']:.3f}"]
            for env, block in sorted(carried.items()) for p in block.get("pairs", [])]
    lines += _table(["environment", "A", "B", "A - B", "p"], rows) + [""]
    return lines


def _carried_link(block: dict, report_dir: Path) -> str:
    """The report a carried environment came from (its .md beside the summary, else the
    summary), relative to `report_dir`."""
    source = ROOT / block["carried_from"]
    if source.with_suffix(".md").is_file():
        source = source.with_suffix(".md")
    return Path(os.path.relpath(source, report_dir)).as_posix()


def headline_table(summary: dict) -> list[str]:
    """The table over the aggregate's tasks that README.md shows (a test keeps the two equal):
    per algorithm, its mean score over the budget on each task (mean ± std over seeds, with the
    number of seeds when some are missing) and its IQM of normalised scores over the complete
    tasks; then each pair's probability of improvement. [] without an aggregate block."""
    block = summary.get("aggregate")
    if not block:
        return []
    envs = summary["environments"]
    tasks = list(block["normalisation"])
    seeds = len(summary["seeds"])
    header = ["algorithm"] + [f"{t}, {_frames(envs[t]['marks'][-1])} frames" if t in envs
                              else t for t in tasks]
    header.append(f"IQM, normalised, over {len(block['tasks'])} tasks" if block["tasks"]
                  else "IQM, normalised")
    rows = []
    for algo in block["algorithms"]:
        row = [f"`{algo}`"]
        for t in tasks:
            entry = envs.get(t, {}).get("algorithms", {}).get(algo)
            values = [v.get("mean_score") for v in entry["seeds"].values()] if entry else []
            s = spread(values)
            if s is None:
                row.append("no finished run")
                continue
            cell = f"{s['mean']:,.0f} ± {s['std']:,.0f}"
            row.append(cell if s["n"] == seeds else f"{cell} ({s['n']} of {seeds} seeds)")
        iqm = block["iqm"].get(algo)
        row.append(f"{iqm['estimate']:.2f} [{iqm['ci'][0]:.2f}, {iqm['ci'][1]:.2f}]" if iqm
                   else "-")
        rows.append(row)
    lines = _table(header, rows) + [""]
    for p in block["probability_of_improvement"]:
        lines.append(f"- Probability of improvement of `{p['a']}` over `{p['b']}` over "
                     f"{len(block['tasks'])} tasks ({', '.join(block['tasks'])}): "
                     f"**{p['estimate']:.2f}** [{p['ci'][0]:.2f}, {p['ci'][1]:.2f}]")
    if block["probability_of_improvement"]:
        lines.append("")
    return lines


def _aggregate_section(summary: dict, profile: Sequence[str | os.PathLike]) -> list[str]:
    """Probability of improvement, IQM and the performance profile (reports/aggregate.py)."""
    block = summary.get("aggregate")
    if not block:
        return []
    lines = ["## Across tasks", "",
             f"Computed with rliable (Agarwal et al., NeurIPS 2021) from each run's mean score "
             f"over the budget, normalised per task as (score - low) / (high - low); "
             f"{block['confidence']:.0%} intervals from a stratified bootstrap over seeds "
             f"({block['reps']:,} replications, seed {block['seed']}). The probability of "
             f"improvement of A over B is the chance that a random run of A beats a random run "
             f"of B on a random task (ties count half); it does not depend on the "
             f"normalisation. The IQM is the mean of the middle 50% of all runs' normalised "
             f"scores. `aggregate.recompute` computes the same numbers from the summary "
             f"(`.json`) beside this report.", ""]
    if block.get("pending_tasks"):
        lines += [f"**Not yet in the aggregate** (some seeds have no mean score yet): "
                  f"{', '.join(block['pending_tasks'])}.", ""]
    lines += ["Mean score over the budget on each task, mean ± std over seeds (of the seeds "
              "finished so far where fewer), and the aggregate:", ""]
    lines += headline_table(summary)
    if not block["tasks"]:
        return lines + ["No task has every seed of every algorithm yet.", ""]
    rows = [[t, _num(lo), _num(hi)] for t, (lo, hi) in block["normalisation"].items()
            if t in block["tasks"]]
    lines += _table(["task", "low (score 0)", "high (score 1)"], rows) + [""]
    rows = [[p["a"], p["b"], f"{p['estimate']:.2f}", f"[{p['ci'][0]:.2f}, {p['ci'][1]:.2f}]"]
            for p in block["probability_of_improvement"]]
    lines += [f"Over {len(block['tasks'])} tasks ({', '.join(block['tasks'])}):", ""]
    lines += _table(["A", "B", "P(A > B)", f"{block['confidence']:.0%} interval"], rows) + [""]
    by_task = block.get("probability_of_improvement_by_task", {})
    if len(by_task) > 1:
        lines += ["On each task alone (the same statistic over that task's seeds, whose mean "
                  "over the tasks is the number above; the permutation p of the difference in "
                  "mean score is the one in the tables above):", ""]
        rows = []
        for t, entries in by_task.items():
            p_values = {(q["a"], q["b"]): q["p"]
                        for q in summary["environments"].get(t, {}).get("pairs", [])}
            for p in entries:
                p_value = p_values.get((p["a"], p["b"]), p_values.get((p["b"], p["a"])))
                rows.append([t, p["a"], p["b"], f"{p['estimate']:.2f}",
                             f"[{p['ci'][0]:.2f}, {p['ci'][1]:.2f}]",
                             "-" if p_value is None else f"{p_value:.3f}"])
        lines += _table(["task", "A", "B", "P(A > B)", f"{block['confidence']:.0%} interval",
                         "permutation p"], rows) + [""]
    rows = [[a, f"{v['estimate']:.3f}", f"[{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]"]
            for a, v in block["iqm"].items()]
    lines += _table(["algorithm", "IQM (normalised)", f"{block['confidence']:.0%} interval"],
                    rows) + [""]
    for f in profile:
        lines += [f"![performance profile]({Path(f).as_posix()})", ""]
    return lines


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


def _seed_text(bench: Benchmark) -> str:
    seeds = bench.seed_list()
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"


def _budget_text(bench: Benchmark, summaries: Sequence[RunSummary]) -> str:
    envs = sorted({s.env for s in summaries})
    budgets = {bench.budget(env)[0] for env in envs} or {bench.total_frames}
    if len(budgets) == 1:
        return f"{_frames(budgets.pop())} frames each"
    return ", ".join(f"{_frames(bench.budget(env)[0])} frames on {env}" for env in envs)


def summary_json(bench: Benchmark, summaries: Sequence[RunSummary],
                 carried: dict[str, dict] | None = None) -> dict:
    """The machine-readable summary written beside the report (`<report stem>.json`):

    {"headline": {"algorithm": LABEL, "backbone": LABEL} or null, "seeds": [...],
     "environments": {ENV: {"marks": [F, ...], "algorithms": {LABEL: {"config": PATH,
         "seeds": {"S": {"scores": {"F": score or null, ...}, "frames_to_threshold": F or null,
         "mean_score": x or null}}}}, "pairs": [{"a": LABEL, "b": LABEL, "diff": x, "p": x}]}},
     "aggregate": {...}}

    with the report's numbers (scores at the marks, frames to the threshold, mean score over the
    budget; pairs as in the report's pairwise table). `config` (relative to the project root)
    is there when the runs came from the benchmark's own configs. The environments of
    `carried` (committed summaries of earlier reports, `bench.carried`) are added unchanged,
    each with `carried_from`. `aggregate` (when the benchmark has an AggregateSpec) is
    aggregate.aggregate_block over the spec's tasks on which every algorithm it names has
    every seed, computed from this file's own per-seed `mean_score`s; the other tasks are
    listed as `pending_tasks`.
    """
    groups = group(summaries)
    configs = _configs_by_run(bench)
    environments: dict[str, dict] = {}
    for env in sorted({env for env, _ in groups}):
        marks = bench.budget(env)[1]
        algorithms = {}
        for (e, algo), runs in groups.items():
            if e != env:
                continue
            algorithms[algo] = {"seeds": {
                str(r.seed): {"scores": {str(m): r.scores[i] for i, m in enumerate(marks)},
                              "frames_to_threshold": r.to_threshold,
                              "mean_score": r.mean_score}
                for r in runs}}
            config = configs.get((env, Path(runs[0].path).name))
            if config is not None:
                algorithms[algo] = {"config": config, **algorithms[algo]}
        environments[env] = {
            "marks": list(marks), "algorithms": algorithms,
            "pairs": [{k: pair[k] for k in ("a", "b", "diff", "p")}
                      for pair in pairs(groups, env)]}
    for env, block in (carried or {}).items():
        environments.setdefault(env, block)
    headline = ({"algorithm": bench.headline[0], "backbone": bench.headline[1]}
                if bench.headline else None)
    out = {"headline": headline, "seeds": bench.seed_list(), "environments": environments}
    if bench.aggregate is not None:
        out["aggregate"] = _aggregate(bench, environments)
    return out


def _aggregate(bench: Benchmark, environments: dict) -> dict:
    """The aggregate block over the complete tasks (every algorithm, every seed)."""
    spec = bench.aggregate
    names = set(spec.algorithms) | {a for pair in spec.pairs for a in pair}
    seeds = {str(s) for s in bench.seed_list()}

    def complete(task: str) -> bool:
        algorithms = environments.get(task, {}).get("algorithms", {})
        return all(seeds <= {s for s, v in algorithms.get(a, {}).get("seeds", {}).items()
                             if v.get("mean_score") is not None} for a in names)

    tasks = tuple(t for t in spec.tasks if complete(t))
    pending = [t for t in spec.tasks if t not in tasks]
    if tasks:
        block = aggregate.aggregate_block(environments, dataclasses.replace(spec, tasks=tasks))
    else:
        block = aggregate.empty_block(spec)
    return dict(block, pending_tasks=pending)


def _configs_by_run(bench: Benchmark) -> dict[tuple[str, str], str]:
    """{(environment, run folder name): its config relative to the project root} of the
    benchmark's planned runs."""
    try:
        planned = sweep.plan_runs(bench.configs, bench.seed_list(), bench.output_root)
    except (sweep.SweepError, config_lib.ConfigError):
        return {}
    return {(r.run.path.parent.name, r.run.path.name): _display(r.config) for r in planned}


def _display(path: str | os.PathLike) -> str:
    """A path relative to the project root when it is inside it."""
    p = Path(path).resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return str(p)


def run_dirs(bench: Benchmark) -> list[Path]:
    """The benchmark's run folders, in config then seed order (from the configs alone)."""
    return [r.run.path for r in sweep.plan_runs(bench.configs, bench.seed_list(),
                                                 bench.output_root)]


def committed_copy(bench: Benchmark, run: Path) -> Path | None:
    """The committed copy of a planned run folder (`bench.reference_runs`/<ENV>/<name>), when
    the benchmark keeps copies and this one has evaluations; None otherwise."""
    if not bench.reference_runs:
        return None
    copy = Path(bench.reference_runs) / run.parent.name / run.name
    return copy if plot.greedy_csv_path(copy) is not None else None


def _read_notes(bench: Benchmark) -> str:
    if not bench.notes:
        return ""
    try:
        return Path(bench.notes).read_text()
    except OSError as e:
        raise BenchmarkError(f"The report's notes {bench.notes} cannot be read "
                             f"({e.strerror}); restore the file or drop the notes.") from None


def _read_carried(bench: Benchmark) -> dict[str, dict]:
    """{ENV: its block} of the committed summaries the benchmark carries, each block marked
    with the summary it came from."""
    carried: dict[str, dict] = {}
    for path in bench.carried:
        data = util.read_json(path) if Path(path).is_file() else None
        if not isinstance(data, dict) or not isinstance(data.get("environments"), dict):
            raise BenchmarkError(f"The carried summary {_display(path)} is missing or has no "
                                 f"environments; restore it from git.")
        for env, block in data["environments"].items():
            carried[env] = dict(block, carried_from=_display(path))
    return carried


def collect_runs(bench: Benchmark, window: float = WINDOW,
                 partial: bool = False) -> tuple[list[RunSummary], list[Path]]:
    """(summaries of the runs with evaluations, pending run folders). A run with a committed
    copy is read from the copy (write_report has just refreshed the copies of the runs under
    the output root, so the report counts exactly what is committed). Raises BenchmarkError for
    a missing or unevaluated run unless `partial`."""
    runs = [committed_copy(bench, r) or r for r in run_dirs(bench)]
    missing = [r for r in runs if not r.is_dir()]
    if missing and not partial:
        raise BenchmarkError(f"{len(missing)} of the {len(runs)} run folder(s) do not exist "
                             f"(e.g. {missing[0]}); run the benchmark without --report-only "
                             f"first (or add --partial).")
    summaries, pending = [], list(missing)
    for r in runs:
        if r in missing:
            continue
        total, marks = bench.budget(plot.run_info(r).env)
        try:
            summaries.append(summarize_run(r, marks, bench.thresholds, total, window,
                                           bench.min_episodes))
        except BenchmarkError:
            if not partial:
                raise
            pending.append(r)
    if not summaries:
        raise BenchmarkError(f"None of the {len(runs)} run(s) has an evaluation yet (e.g. "
                             f"{runs[0]}); run the benchmark first.")
    return summaries, pending


def export_runs(bench: Benchmark, commit: str | None = None) -> list[Path]:
    """Copy every planned run under the output root that has an evaluation into
    `bench.reference_runs` (reference.export_run); the copies' folders. A live run is read at
    one moment: the copy is what the report then counts."""
    if not bench.reference_runs:
        return []
    keep = Path(bench.reference_runs).resolve()
    commit = commit or reference.current_commit()
    return [reference.export_run(r, keep, commit) for r in run_dirs(bench)
            if r.is_dir() and plot.greedy_csv_path(r) is not None
            and plot.greedy_csv_path(r).stat().st_size > 0]


def write_report(bench: Benchmark, window: float = WINDOW,
                 when: str | None = None, partial: bool = False) -> tuple[Path, list[Path]]:
    """Copy the runs into `bench.reference_runs` when the benchmark keeps them, then compute the
    report from the copies (and from the run folders of any other run) and write it with its
    figures.

    Returns (report path, figure paths). Raises BenchmarkError, before writing the report, its
    figures or its summary (the copies may have been refreshed), when a run folder is missing or
    a run has no evaluations; with `partial`, such runs are listed as pending instead (an error
    only when no run has evaluations).
    """
    notes = _read_notes(bench)
    carried = _read_carried(bench)
    readme = _readme_table_span(bench)  # checked before anything is written
    commit = reference.current_commit()  # before the copies change tracked files ("-dirty")
    export_runs(bench, commit)
    summaries, pending = collect_runs(bench, window, partial)
    report = Path(bench.report)
    figure_base = report.with_name(f"{report.stem}_curves.png")
    try:
        figures = [Path(p) for p in plot.plot_runs([s.path for s in summaries], figure_base,
                                                   x="both")]
    except plot.PlotError as e:
        raise BenchmarkError(f"The learning curves could not be drawn: {e}") from None
    summary = summary_json(bench, summaries, carried)
    if "aggregate" in summary and summary["aggregate"]["tasks"]:
        spec = aggregate.spec_of(summary["aggregate"])
        profile = report.with_name(f"{report.stem}_profile.png")
        figures.append(Path(aggregate.draw_performance_profile(summary["environments"], spec,
                                                               profile)))
    relative = [os.path.relpath(f, report.parent) for f in figures]
    util.atomic_write_text(report, format_report(bench, summaries, relative, window, when,
                                                 notes, pending, summary, commit))
    summary_path = report.with_suffix(".json")
    util.atomic_write_text(summary_path, json.dumps(summary, indent=1) + "\n")
    umask = os.umask(0)  # the temporary files were private (0600): give them the usual mode
    os.umask(umask)
    for path in (report, summary_path):
        os.chmod(path, 0o666 & ~umask)
    if readme is not None:
        _write_readme_table(bench, summary)
    return report, figures


def _readme_table_span(bench: Benchmark) -> tuple[str, int, int] | None:
    """(text of bench.readme, start, end) of the lines between its table markers (see
    Benchmark.readme); None without a readme. Raises BenchmarkError when a marker is missing."""
    if not bench.readme:
        return None
    path = Path(bench.readme)
    try:
        text = path.read_text()
    except OSError as e:
        raise BenchmarkError(f"{_display(path)} cannot be read ({e.strerror}); restore it from "
                             f"git.") from None
    opening, closing = f"<!-- {bench.name} table", f"<!-- end of {bench.name} table -->"
    first = text.find(opening)
    end = text.find(closing, first) if first >= 0 else -1
    if first < 0 or end < 0:
        raise BenchmarkError(f"{_display(path)} has no line starting with {opening!r} followed "
                             f"by one with {closing!r}; put them back around the table (it is "
                             f"rewritten with every report).")
    start = text.find("\n", first) + 1
    return text, start, end


def _write_readme_table(bench: Benchmark, summary: dict) -> None:
    """Rewrite the table between bench.readme's markers with headline_table(summary)."""
    text, start, end = _readme_table_span(bench)
    table = "\n".join(headline_table(summary)).rstrip("\n") + "\n"
    if text[start:end] != table:
        path = Path(bench.readme)
        mode = path.stat().st_mode & 0o777
        util.atomic_write_text(path, text[:start] + table + text[end:])
        os.chmod(path, mode)


# ------------------------------------------------------------------------------ running


def budget_groups(bench: Benchmark) -> list[tuple[int, tuple[str, ...]]]:
    """The configs grouped by the frame budget of their environment, in config order."""
    if not bench.budgets:
        return [(bench.total_frames, bench.configs)]
    groups: dict[int, list[str]] = {}
    for c in bench.configs:
        env = config_lib.load_config(c)["env"]["name"]
        groups.setdefault(bench.budget(env)[0], []).append(c)
    return [(total, tuple(configs)) for total, configs in groups.items()]


def finished_copies(bench: Benchmark) -> set[tuple[str, int]]:
    """(config, seed) of the runs that have no folder under the output root but a committed copy
    that reached the run's budget (a benchmark continued on another machine)."""
    if not bench.reference_runs:
        return set()
    done = set()
    for r in sweep.plan_runs(bench.configs, bench.seed_list(), bench.output_root):
        copy = committed_copy(bench, r.run.path)
        if r.run.path.is_dir() or copy is None:
            continue
        record = util.read_json(copy / "state" / "finished.json")
        total = bench.budget(r.run.path.parent.name)[0]
        if isinstance(record, dict) and int(record.get("total_frames", 0)) >= total:
            done.add((r.config, r.seed))
    return done


def sweep_groups(bench: Benchmark, skip: set[tuple[str, int]] = frozenset()
                 ) -> list[tuple[int, tuple[str, ...], int | list[int]]]:
    """(frame budget, configs, seeds) of each sweep to start: one per frame budget, split further
    by the seeds left to run when `skip` names (config, seed) pairs not to run. Seeds are a
    count when they are 0..N-1 (the sweep's own form), else a list."""
    groups = []
    for total_frames, configs in budget_groups(bench):
        by_seeds: dict[tuple[int, ...], list[str]] = {}
        for c in configs:
            left = tuple(s for s in bench.seed_list() if (str(Path(c).resolve()), s) not in skip)
            if left:
                by_seeds.setdefault(left, []).append(c)
        for left, group in by_seeds.items():
            seeds = len(left) if left == tuple(range(len(left))) else list(left)
            groups.append((total_frames, tuple(group), seeds))
    return groups


def run_benchmark(bench: Benchmark, address: str | None = None,
                  cpus_per_run: float | None = None, report_only: bool = False,
                  partial: bool = False,
                  out: Callable[[str], None] | None = None,
                  status_seconds: float = sweep.STATUS_SECONDS) -> tuple[Path, list[Path]]:
    """Run (or resume) every run of `bench` through the sweep, then write the report.

    Raises RunsFailed / RunsStopped when runs failed or were stopped (no report then; the same
    call resumes them), BenchmarkError when the report cannot be made, sweep.SweepError /
    config.ConfigError on bad input (before anything is written).
    """
    say = out or (lambda text: print(text, flush=True))
    if not report_only:
        committed = finished_copies(bench)
        if committed:
            say(f"{len(committed)} run(s) finished in the committed copies under "
                f"{_display(bench.reference_runs)} and have no folder under the output root: "
                f"not run again (their copies are reported)")
        results = []
        for total_frames, configs, seeds in sweep_groups(bench, committed):
            results += sweep.run_sweep(configs, seeds, total_frames=total_frames,
                                       output_root=bench.output_root, address=address,
                                       max_parallel=bench.max_parallel,
                                       cpus_per_run=cpus_per_run,
                                       status_seconds=status_seconds, plot=False, out=say)
        stopped = [r for r in results if r.state == "stopped"]
        failed = [r for r in results if r.state == "failed"]
        if stopped:
            raise RunsStopped(f"{len(stopped)} run(s) were stopped before their budget (e.g. "
                                 f"{stopped[0].path}); run the same command again to resume "
                                 f"them, then the report is written.")
        if failed:
            raise RunsFailed(f"{len(failed)} run(s) failed (e.g. {failed[0].path}: "
                                 f"{failed[0].message}); see its log/*.err and the sweep's "
                                 f".sweep/*.out, fix the cause and run the same command again.")
    report, figures = write_report(bench, partial=partial)
    say(f"report: {report}")
    for f in figures:
        say(f"figure: {f}")
    return report, figures


# ------------------------------------------------------------------------------ command line


def _frame_list(text: str) -> tuple[int, ...]:
    try:
        marks = tuple(sorted({int(float(x)) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of frame counts (e.g. 10000,20000)."
        ) from None
    if not marks or marks[0] <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must list positive frame counts.")
    return marks


def _threshold(text: str) -> tuple[str, float]:
    env, sep, value = text.rpartition("=")
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    if not sep or not env or math.isnan(score):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not ENV=SCORE (e.g. Hopper-v5=1000).")
    return env, score


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sample_efficiency.py",
        description="Run configs for several seeds at a fixed frame budget (through sweep.py, "
                    "resuming what was interrupted), then write a markdown report with the "
                    "learning curves.")
    parser.add_argument("configs", nargs="*", metavar="CONFIG",
                        help="experiment config files (or use --preset)")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="a predefined benchmark; other options override its values")
    parser.add_argument("--seeds", type=int, metavar="N", help="seeds 0..N-1 per config")
    parser.add_argument("--first-seed", type=int, metavar="S",
                        help="seeds S..S+N-1 instead (e.g. 100 to tune away from the held-out "
                             "seeds; a preset's report then goes to the output root unless "
                             "--report is given)")
    parser.add_argument("--total-frames", type=int, metavar="N", help="frame budget per run")
    parser.add_argument("--checkpoints-at", type=_frame_list, metavar="F1,F2,...",
                        help="frame counts of the score table (default: 4 evenly spaced "
                             "counts up to the budget)")
    parser.add_argument("--threshold", type=_threshold, action="append", metavar="ENV=SCORE",
                        help="score threshold of an environment (e.g. Hopper-v5=1000); "
                             "repeatable")
    parser.add_argument("--output-root", metavar="DIR", help="where the runs go")
    parser.add_argument("--report", metavar="PATH",
                        help=f"report path (.md; default: <output root>/{REPORT_NAME})")
    parser.add_argument("--address", metavar="ADDR",
                        help="join the Ray cluster at ADDR (HOST:PORT or auto); default: a "
                             "local Ray instance")
    parser.add_argument("--max-parallel", type=int, metavar="K",
                        help="at most K runs at once (default: as many as the CPUs hold)")
    parser.add_argument("--cpus-per-run", type=float, metavar="C",
                        help="CPUs each run reserves (default: one per process of the run)")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the run folders as they are; run nothing")
    parser.add_argument("--partial", action="store_true",
                        help="with --report-only: report the runs that have evaluations and "
                             "list the others as pending, instead of refusing")
    return parser


# What makes a preset's runs another benchmark than the committed one.
_VARIED = ("seeds", "first_seed", "total_frames", "marks", "budgets", "thresholds")


def _off_the_record(bench: Benchmark, changes: dict, args: argparse.Namespace) -> dict:
    """The further changes for a preset run with other seeds, budgets, marks or thresholds than
    its own (tuning seeds, a short trial): its report goes under the output root (unless
    --report), and its notes, committed run copies and README table are left alone. A report
    written elsewhere (--report) of the preset's own runs leaves the README table alone."""
    varied = any(key in changes and changes[key] != getattr(bench, key) for key in _VARIED)
    if not varied:
        return {"readme": None} if args.report else {}
    out = {"notes": None, "reference_runs": None, "readme": None}
    if not args.report:  # never over the committed report
        root = Path(args.output_root or bench.output_root).resolve()
        out["report"] = str(root / REPORT_NAME)
    return out


def benchmark_from_args(args: argparse.Namespace) -> Benchmark:
    """The Benchmark named by the command line (a preset with overrides, or explicit)."""
    if args.preset and args.configs:
        raise BenchmarkError("Give either --preset or config files, not both.")
    if args.preset:
        bench = preset(args.preset)
    elif not args.configs:
        raise BenchmarkError("No config was given; name config files or use --preset "
                             f"({', '.join(PRESETS)}).")
    else:
        if args.seeds is None or args.total_frames is None:
            raise BenchmarkError("With config files, --seeds and --total-frames are required "
                                 "(e.g. --seeds 3 --total-frames 30000).")
        root = args.output_root or "output/benchmark"
        bench = Benchmark(
            name=", ".join(config_lib.experiment_name(c) for c in args.configs),
            configs=tuple(str(Path(c).resolve()) for c in args.configs), seeds=args.seeds,
            total_frames=args.total_frames, marks=default_marks(args.total_frames),
            thresholds={}, output_root=str(Path(root).resolve()),
            report=str(Path(root).resolve() / REPORT_NAME), command="")
    changes: dict = {}
    if args.seeds is not None:
        changes["seeds"] = args.seeds
    if args.total_frames is not None:
        changes["total_frames"] = args.total_frames
        if not args.checkpoints_at and args.preset:
            changes["marks"] = tuple(m for m in bench.marks if m < args.total_frames) + (
                args.total_frames,)
        # one budget for every environment, each keeping its marks below it
        changes["budgets"] = {env: (args.total_frames,
                                    tuple(m for m in marks if m < args.total_frames)
                                    + (args.total_frames,))
                              for env, (_, marks) in bench.budgets.items()}
    if args.first_seed is not None:
        if args.first_seed < 0:
            raise BenchmarkError(f"--first-seed {args.first_seed} must be 0 or more.")
        changes["first_seed"] = args.first_seed
    if args.checkpoints_at:
        changes["marks"] = args.checkpoints_at
    if args.threshold:
        changes["thresholds"] = dict(bench.thresholds, **dict(args.threshold))
    if args.output_root:
        changes["output_root"] = str(Path(args.output_root).resolve())
        if not args.report and not args.preset:
            changes["report"] = str(Path(args.output_root).resolve() / REPORT_NAME)
    if args.report:
        changes["report"] = str(Path(args.report).resolve())
    if args.max_parallel is not None:
        changes["max_parallel"] = args.max_parallel
    if args.preset:
        changes.update(_off_the_record(bench, changes, args))
    bench = dataclasses.replace(bench, **changes)
    if bench.seeds < 1:
        raise BenchmarkError(f"--seeds {bench.seeds} gives no runs; use 1 or more.")
    if bench.total_frames <= 0:
        raise BenchmarkError(f"--total-frames {bench.total_frames} must be a positive number "
                             f"of frames.")
    for env, (total, marks) in bench.budgets.items():
        if max(marks) > total:
            raise BenchmarkError(f"The table frame count {max(marks)} of {env} is beyond its "
                                 f"budget of {total} frames; fix the preset's budgets.")
    if args.checkpoints_at and bench.budgets:
        bench = dataclasses.replace(bench, budgets={
            env: (total, tuple(m for m in args.checkpoints_at if m <= total) or (total,))
            for env, (total, _) in bench.budgets.items()})
    if max(bench.marks) > bench.total_frames:
        raise BenchmarkError(f"The table frame count {max(bench.marks)} is beyond the budget "
                             f"of {bench.total_frames} frames; lower --checkpoints-at or raise "
                             f"--total-frames.")
    if not bench.report.endswith(".md"):
        raise BenchmarkError(f"The report {bench.report} must end in .md; give a .md path "
                             f"with --report.")
    return dataclasses.replace(bench, command=_command(args))


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this benchmark (without --report-only)."""
    argv = [a for a in (args.argv or []) if a not in ("--report-only", "--partial")]
    return " ".join(["python bench/sample_efficiency.py", *argv])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        if args.partial and not args.report_only:
            raise BenchmarkError("--partial only applies to a report of runs as they are; add "
                                 "--report-only (a benchmark that runs reports every run).")
        bench = benchmark_from_args(args)
        run_benchmark(bench, address=args.address, cpus_per_run=args.cpus_per_run,
                      report_only=args.report_only, partial=args.partial)
    except UserError as e:  # BenchmarkError, SweepError, ConfigError, AggregateError, ...
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_status", 2)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
