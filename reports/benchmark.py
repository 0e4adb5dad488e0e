"""What a benchmark is, as its runs and its report see it: `Benchmark`, and the error that names
a problem with its input or runs.

Made by bench/sample_efficiency.py (its presets and command line) and read by the report modules
(reports/report.py, reports/markdown.py). Holds paths and numbers only: nothing here reads a run
but `Benchmark.committed_copy`, which looks for a copy's greedy.csv.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from cluster.plan import plan_runs
from errors import UserError
from reports import aggregate
from reports.runs import greedy_csv_path

ROOT = Path(__file__).resolve().parent.parent


class BenchmarkError(UserError):
    """A problem with the benchmark's input or runs; the message is one sentence with the fix."""

    exit_status = 2  # of the command line


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
    report: str  # markdown path: where this report, its summary and figures go
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
    # the committed copies of the report's runs (reports/reference.py's layout): read for a run
    # whose folder is not under output_root (unless rerun), written only when publishing;
    # None: not kept
    reference_runs: str | None = None
    # committed summaries (.json) whose environments join this report's summary unchanged, for
    # the aggregate across tasks (their runs were reported there)
    carried: tuple[str, ...] = ()
    # named algorithms of one environment carried from a committed summary into an environment
    # this benchmark runs too: (summary .json, environment, algorithm labels). Their per-seed
    # numbers (scores at the marks, frames to the threshold, mean score over the budget) join
    # this report's tables, pairs and aggregate beside its own runs, marked `carried_from`; the
    # summary must have the same marks for that environment (the same budget), and the
    # threshold should be the same
    carried_algorithms: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    # the evidence across tasks (reports/aggregate.py); None: none
    aggregate: aggregate.AggregateSpec | None = None
    # a markdown file (README.md) showing the summary's headline_table between the lines
    # `<!-- NAME table ...` and `<!-- end of NAME table -->`: rewritten when publishing; None: none
    readme: str | None = None
    # the committed report (docs/benchmark/<PRESET>.md, its summary <PRESET>.json beside it);
    # None: the benchmark has none
    committed: str | None = None
    # write the committed report: `report` is `committed`, the runs under output_root are copied
    # into reference_runs and the report counts the copies, readme's table is rewritten
    publish: bool = False
    # the runs under output_root only: committed copies are neither counted as finished nor
    # read, and the report compares its runs with the committed summary
    rerun: bool = False

    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def budget(self, env: str) -> tuple[int, tuple[int, ...]]:
        """(frame budget, table frame counts) of an environment."""
        return self.budgets.get(env, (self.total_frames, self.marks))

    def run_dirs(self) -> list[Path]:
        """The run folders under the output root, in config then seed order (from the configs
        alone)."""
        return [r.run.path for r in plan_runs(self.configs, self.seed_list(), self.output_root)]

    def committed_copy(self, run: Path) -> Path | None:
        """The committed copy of a planned run folder (`reference_runs`/<ENV>/<name>), when the
        benchmark keeps copies, reads them (not a rerun) and this one has evaluations; None
        otherwise."""
        if not self.reference_runs or self.rerun:
            return None
        copy = Path(self.reference_runs) / run.parent.name / run.name
        return copy if greedy_csv_path(copy) is not None else None

    def sources(self, prefer_runs: bool | None = None) -> list[Path]:
        """The folder the report reads for each planned run: its folder under output_root when
        that exists (`prefer_runs`, the default unless publishing), else its committed copy,
        else the run folder (missing). A published report reads the copies it has just
        refreshed, so it counts exactly what is committed."""
        prefer_runs = not self.publish if prefer_runs is None else prefer_runs
        return [r if prefer_runs and r.is_dir() else self.committed_copy(r) or r
                for r in self.run_dirs()]

    def committed_summary(self) -> Path | None:
        """The committed report's summary (`committed` with .json); None without one."""
        return Path(self.committed).with_suffix(".json") if self.committed else None


def display(path: str | os.PathLike) -> str:
    """A path relative to the project root when it is inside it."""
    p = Path(path).resolve()
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return str(p)
