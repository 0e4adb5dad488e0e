"""Committed reference results: the benchmark summaries and runs a new run is compared with.

Read by `plot.py --reference` and by the benchmark's reports (reports/report.py), which also
write them when they write a report; `score_at` is the reports' score of a run at a frame count,
shared by both.
Nothing here trains, starts processes or touches a live run: runs are copied from, never
written to.

On disk, all inside the repository:

    docs/benchmark/<PRESET>.json                  a report's machine-readable summary
                                                  (reports/report.py): per environment,
                                                  algorithm and seed, the scores at the report's
                                                  frame counts
    docs/benchmark/runs/<PRESET>/<ENV>/<EXPERIMENT>.seed<S>/
        log/<EXPERIMENT>.seed<S>.greedy.csv       the run's greedy evaluation episodes, copied byte
                                                  for byte (hours,epoch,frames,score; plot.py)
        log/hps.json                              the run's resolved config, copied
        state/finished.json                       copied when the run reached its budget
        provenance.json                           {"commit": the project's commit when copied,
                                                  "copied": ISO time, "source": the run folder}

A committed run is a run folder reduced to the files the reports read, so plot.py and the
reports read it as they read a run (reports/runs.py). The layout is described for readers in
docs/benchmark/runs/README.md.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path

import numpy as np

import util
from errors import UserError
from process.rundir import RunDir
from reports.runs import FRAMES, SCORE

ROOT = Path(__file__).resolve().parent.parent
BENCHMARK_DOCS = ROOT / "docs" / "benchmark"
PROVENANCE = "provenance.json"
# keys of log/hps.json that belong to one run, not to its config (master.py adds name and seed)
RUN_KEYS = ("name", "seed", "output_root")
WINDOW = 0.1  # a score at F averages the episodes in the last 10% of frames before F


class UnknownReference(UserError, ValueError):
    """A reference the user named does not exist; the message is one sentence with the fix."""


def score_at(data: np.ndarray, mark: float, window: float = WINDOW,
             min_episodes: int = 1, reached: float | None = None) -> float | None:
    """A run's score at frame count `mark`, as the benchmark reports define it: the mean score
    of its evaluation episodes that ended at frames in ((1 - window) * mark, mark]; None when
    there are fewer than `min_episodes`, or when `mark` is beyond `reached` (an unfinished
    run's frames so far: that window is not complete yet).

    `data`: reports.runs.load_greedy's array [k, 4] (hours, epoch, frames, score).
    """
    if reached is not None and mark > reached:
        return None
    frames, scores = data[:, FRAMES], data[:, SCORE]  # [k], [k]
    inside = (frames > (1.0 - window) * mark) & (frames <= mark)  # [k]: (0.9 F, F]
    count = int(np.count_nonzero(inside))
    return float(np.mean(scores[inside])) if count and count >= min_episodes else None


def summary_path(preset: str) -> Path:
    return BENCHMARK_DOCS / f"{preset}.json"


def presets() -> list[str]:
    """The presets with a committed summary (docs/benchmark/<PRESET>.json with environments)."""
    found = []
    for path in sorted(BENCHMARK_DOCS.glob("*.json")):
        data = util.read_json(path)
        if isinstance(data, dict) and isinstance(data.get("environments"), dict):
            found.append(path.stem)
    return found


def load_summary(preset: str) -> dict:
    """A preset's committed summary; UnknownReference for a preset without one."""
    path = summary_path(preset)
    data = util.read_json(path) if path.is_file() else None
    if not isinstance(data, dict) or not isinstance(data.get("environments"), dict):
        raise UnknownReference(
            f"There is no reference preset {preset!r} (no summary {_display(path)}); choose one "
            f"of {', '.join(presets()) or '(none committed)'}.")
    return data


def band(summary: dict, env: str, algo: str) -> dict:
    """The reference band of one (environment, algorithm) from a summary: at each of its frame
    counts (its report's marks), the mean, min and max of the seeds' scores there (each seed's
    score is the report's windowed mean, see reports/scores.py) and how many seeds
    have one. Marks where no seed has a score are left out.

    {"frames": [m], "mean": [m], "low": [m], "high": [m], "seeds": [m]} (numpy arrays).
    """
    entry = summary["environments"].get(env)
    if entry is None:
        raise UnknownReference(
            f"The reference has no {env} (it has {', '.join(sorted(summary['environments']))}); "
            f"choose a preset that covers {env}.")
    algorithms = entry["algorithms"]
    if algo not in algorithms:
        raise UnknownReference(
            f"The reference has no algorithm {algo!r} on {env} (it has "
            f"{', '.join(sorted(algorithms))}); name one with --algorithm.")
    seeds = algorithms[algo]["seeds"]
    frames, mean, low, high, count = [], [], [], [], []
    for mark in entry["marks"]:
        values = [s["scores"].get(str(mark)) for s in seeds.values()]
        values = [v for v in values if v is not None]
        if values:
            frames.append(mark)
            mean.append(float(np.mean(values)))
            low.append(min(values))
            high.append(max(values))
            count.append(len(values))
    return {"frames": np.asarray(frames, np.float64), "mean": np.asarray(mean),
            "low": np.asarray(low, np.float64), "high": np.asarray(high, np.float64),
            "seeds": np.asarray(count)}


def _config_of_run(hps: dict) -> dict:
    return {k: v for k, v in hps.items() if k not in RUN_KEYS}


def match_algorithm(summary: dict, env: str, hps: dict | None, label: str) -> str | None:
    """The reference algorithm a run belongs to on `env`: the one whose config resolves to the
    run's own (log/hps.json without its run keys), else the one named like the run (`label`,
    its algorithm label), else None."""
    import config as config_lib  # the config loader; imported here so that reading a summary
    # needs nothing but the JSON

    algorithms = summary["environments"].get(env, {}).get("algorithms", {})
    if isinstance(hps, dict):
        for algo, entry in algorithms.items():
            path = entry.get("config")
            if not path or not (ROOT / path).is_file():
                continue
            try:
                wanted = _config_of_run(config_lib.load_config(ROOT / path))
            except config_lib.ConfigError:
                continue
            if wanted == _config_of_run(hps):
                return algo
    return label if label in algorithms else None


def algorithms_for(summary: dict, groups: dict, chosen: str | None = None) -> dict[str, str]:
    """{environment: the reference algorithm to draw beneath its runs}, for plot.group_runs's
    {environment: {label: [run folders]}}: `chosen` when given, else match_algorithm on each
    environment's first run. Raises UnknownReference (one sentence) for an environment the
    preset lacks or a run it cannot place."""
    out = {}
    for env, by_label in groups.items():
        if env not in summary["environments"]:
            band(summary, env, "")  # raises with the environments it has
        if chosen is not None:
            out[env] = chosen
            continue
        label, runs = next(iter(by_label.items()))
        hps_path = Path(runs[0]) / "log" / "hps.json"
        try:
            hps = json.loads(hps_path.read_text()) if hps_path.is_file() else None
        except (OSError, ValueError):
            hps = None
        algo = match_algorithm(summary, env, hps, label)
        if algo is None:
            names = ", ".join(sorted(summary["environments"][env]["algorithms"]))
            raise UnknownReference(
                f"The run {runs[0]} matches no algorithm of the reference on {env} (neither its "
                f"config nor its label {label!r} is one of {names}); name one with --algorithm.")
        out[env] = algo
    return out


def current_commit() -> str | None:
    """The project's commit (with "-dirty" when tracked files have changes); None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=30, check=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=30,
                               check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return head.strip() + ("-dirty" if dirty.strip() else "")


def export_run(run_dir: str | os.PathLike, dest_root: str | os.PathLike,
               commit: str | None = None) -> Path:
    """Copy the files a report reads from one run folder to `dest_root`/<ENV>/<run folder name>
    (a preset's committed runs: docs/benchmark/runs/<PRESET>) and return the copy's folder. The
    run is only read. Each file is written whole (temporary name, then rename); a copy whose
    greedy.csv and finished state are unchanged is left as it is, provenance included."""
    source = RunDir.at(Path(run_dir).resolve())
    copy = RunDir.at(Path(dest_root) / _env_of(source) / source.name)
    pairs = [(source.greedy_csv, copy.greedy_csv), (source.hps, copy.hps),
             (source.finished_file, copy.finished_file)]
    unchanged = (copy.greedy_csv.is_file() and source.greedy_csv.is_file()
                 and copy.greedy_csv.read_bytes() == source.greedy_csv.read_bytes()
                 and copy.finished_file.is_file() == source.finished_file.is_file())
    dest = copy.path
    if unchanged:
        return dest
    for path, target in pairs:
        if path.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            util.atomic_write_bytes(target, path.read_bytes())
        elif target.is_file():
            target.unlink()  # a finished.json the run no longer has (started over)
    util.atomic_write_json(dest / PROVENANCE, {
        "commit": commit if commit is not None else current_commit(),
        "copied": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "source": str(source.path)})
    return dest


def _env_of(run: RunDir) -> str:
    hps = util.read_json(run.hps)
    if isinstance(hps, dict) and isinstance(hps.get("env"), dict):
        name = hps["env"].get("name")
        if isinstance(name, str):
            return name
    return run.path.parent.name


def _display(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)
