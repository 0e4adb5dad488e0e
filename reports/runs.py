"""Reading a run folder as the reports and plot.py do: its greedy evaluations and its labels.

Run in the process that reads runs (plot.py, the benchmark's reports), never by the training
processes, and only reads. A run folder is `<output_root>/<ENV>/<EXPERIMENT>[.seed<S>]/`, or a
committed copy of one (reports/reference.py); what is read of it:
- `log/*.greedy.csv`: one line per finished evaluation episode, `hours,epoch,frames,score`
  (no header, appended by the evaluators; a half-written last line is ignored; a header line
  naming the four columns is skipped);
- `log/hps.json` (optional): the resolved config; `env.name` names the environment.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from errors import UserError

# greedy.csv columns
HOURS, EPOCH, FRAMES, SCORE = range(4)
COLUMNS = ("hours", "epoch", "frames", "score")

_SEED_SUFFIX = re.compile(r"\.seed\d+$")
_RUN_NUMBER = re.compile(r"[._-]?\d+$")
# Names whose last digit belongs to the algorithm, not to a run number: `td3` (TD3), `..._h3`
# (a rollout horizon). A run number may still follow them: `steve_td3_2` -> `steve_td3`.
_DIGIT_NAME = re.compile(r"(td3|_h\d+)$")


class RunReadError(UserError, ValueError):
    """A problem the user can fix: a missing path, no runs found, a run without evaluations
    (plot.py raises it as PlotError)."""


@dataclass(frozen=True)
class RunInfo:
    """Where a run lives and how it is labelled."""

    path: Path
    env: str  # panel
    experiment: str  # folder name without `.seed<S>`
    algo: str  # experiment without a trailing run number


def strip_seed(name: str) -> str:
    """`steve.seed3` -> `steve`; names without a seed suffix are returned unchanged."""
    return _SEED_SUFFIX.sub("", name)


def algorithm_label(experiment: str) -> str:
    """The algorithm of an experiment folder name.

    Drops a `.seed<S>` suffix, then a trailing run number (the 2018 experiment names end in the
    number of the kept run, which changes nothing): `steve3` -> `steve`, `mve_tdk1.seed0` ->
    `mve_tdk`, `speedy_steve1` -> `speedy_steve`. A name that is only digits is kept whole, and
    so is one ending in `td3` or in a horizon `_h<N>` (`steve_td3`, `h10_steve_h10`).
    """
    name = strip_seed(experiment)
    if _DIGIT_NAME.search(name):
        return name
    algo = _RUN_NUMBER.sub("", name)
    return algo or name


def run_info(run_dir: str | os.PathLike) -> RunInfo:
    """Environment, experiment and algorithm of a run folder.

    The environment is `env.name` from `log/hps.json` when that file has it, else the name of
    the run's parent folder (`<output_root>/<ENV>/<EXPERIMENT>`).
    """
    path = Path(run_dir)
    env = Path(os.path.abspath(path)).parent.name
    hps_path = path / "log" / "hps.json"
    if hps_path.is_file():
        try:
            hps = json.loads(hps_path.read_text())
        except (OSError, ValueError):
            hps = None  # a damaged config does not stop plotting; fall back on the folder name
        if isinstance(hps, dict):
            env_config = hps.get("env")
            if isinstance(env_config, dict) and isinstance(env_config.get("name"), str):
                env = env_config["name"]
    experiment = strip_seed(Path(os.path.abspath(path)).name)
    return RunInfo(path=path, env=env, experiment=experiment, algo=algorithm_label(experiment))



def greedy_csv_path(run_dir: str | os.PathLike) -> Path | None:
    """The run's `log/*.greedy.csv`, preferring `log/<folder name>.greedy.csv`; None if absent."""
    log = Path(run_dir) / "log"
    preferred = log / f"{Path(os.path.abspath(run_dir)).name}.greedy.csv"
    if preferred.is_file():
        return preferred
    candidates = sorted(log.glob("*.greedy.csv"))
    if len(candidates) > 1:
        names = ", ".join(c.name for c in candidates)
        raise RunReadError(
            f"run {run_dir} has several greedy.csv files ({names}) and none is named after the "
            "run folder: move the stale ones out of log/."
        )
    return candidates[0] if candidates else None


def load_greedy(run_dir: str | os.PathLike) -> np.ndarray:
    """All finished evaluation episodes of a run as a float array [k, 4]: hours, epoch, frames,
    score, in file order.

    A last line without its newline is still being written (rundir.append_greedy_row ends every
    row with one) and is never read, even when it already holds four numbers: "0.3,2,2000,12"
    may be the start of "0.3,2,2000,1234.5". A header line naming the four columns (in any
    order, e.g. `hours,epoch,frames,score`) is skipped, and the lines after it are read in its
    order.
    Raises PlotError when the run has no evaluation yet, or when an earlier line cannot be read.
    """
    csv_path = greedy_csv_path(run_dir)
    rows: list[list[float]] = []
    if csv_path is not None:
        # split() leaves "" after a final newline; anything else there is a line being written.
        complete = csv_path.read_text().split("\n")[:-1]
        order = list(range(4))  # file column of hours, epoch, frames, score
        for number, line in enumerate(complete, start=1):
            if not line.strip():
                continue
            header = _header_order(line)
            if header is not None:
                order = header
                continue
            row = _parse_line(line)
            if row is None:
                raise RunReadError(
                    f"line {number} of {csv_path} is not 'hours,epoch,frames,score' "
                    f"({line.strip()[:60]!r}): fix or remove that line."
                )
            rows.append([row[i] for i in order])
    if not rows:
        raise RunReadError(
            f"run {run_dir} has no evaluations yet (log/*.greedy.csv is missing or empty): "
            "wait for its first evaluation episode to finish, or leave the run out."
        )
    return np.asarray(rows, dtype=np.float64)  # [k, 4]


def _header_order(line: str) -> list[int] | None:
    """For a header line naming the four columns, the file column of hours, epoch, frames and
    score; None for any other line."""
    names = [field.strip().strip('"').lower() for field in line.strip().split(",")]
    if sorted(names) != sorted(COLUMNS):
        return None
    return [names.index(column) for column in COLUMNS]


def _parse_line(line: str) -> list[float] | None:
    fields = line.strip().split(",")
    if len(fields) != 4:
        return None
    try:
        values = [float(field) for field in fields]
    except ValueError:
        return None
    return values if all(np.isfinite(values)) else None

