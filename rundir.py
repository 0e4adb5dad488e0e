"""The on-disk layout of one run, and the small shared state its processes exchange.

Every process of a run opens the same folder (2018 layout, extended):

    <output_root>/<ENV>/<EXPERIMENT>/          EXPERIMENT = config file name [+ ".seed<S>"]
        log/hps.json                           the resolved config (+ name, seed), real JSON
        log/valuerl.log, log/worldmodel.log    learner lines: hours, epoch, updates, frames, losses
        log/<EXPERIMENT>.greedy.csv            evaluator rows: hours,epoch,frames,score
        log/<process>.err                      the traceback of a process that died, if any
        log/<process>.out                      what a child printed (TensorFlow start-up lines...)
        checkpoints/policy/, checkpoints/worldmodel/     latest checkpoints (checkpoint.py)
        checkpoints/backups/<role>/<updates>/            numbered backups
        replay/                                the shared replay buffer (replay.py)
        tensorboard/<role>/                    TensorBoard summaries, x-axis = frames
        state/progress.bin                     shared counters (below)
        state/finished.json                    written when the run reached --total-frames

`Progress` is a tiny memory-mapped array of int64 counters (learner update counts), written
by one process each and read by all: an aligned 8-byte store is atomic, so no lock is needed.
Frames are not counted here: the replay buffer's count is the frame counter.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import portalocker

PROGRESS_FIELDS = ("policy_updates", "worldmodel_updates", "policy_epoch", "worldmodel_epoch")
ROLES = ("policy", "worldmodel")


def run_name(experiment: str, seed: int | None) -> str:
    return experiment if seed is None else f"{experiment}.seed{seed}"


@dataclass(frozen=True)
class RunDir:
    """Paths of one run; plain and picklable so it can be handed to child processes."""

    root: str
    name: str  # folder name: the experiment, with ".seed<S>" for seeded runs
    log_path: str = "log"  # the config's log_path
    save_model_path: str = "checkpoints"  # the config's save_model_path

    @classmethod
    def for_config(cls, config: dict, experiment: str, seed: int | None,
                   output_root: str | None = None) -> RunDir:
        base = output_root if output_root is not None else config["output_root"]
        env = re.sub(r"[^A-Za-z0-9_.-]", "_", config["env"]["name"])
        name = run_name(experiment, seed)
        return cls(root=str(Path(base) / env / name), name=name, log_path=config["log_path"],
                   save_model_path=config["save_model_path"])

    @property
    def path(self) -> Path:
        return Path(self.root)

    @property
    def log(self) -> Path:
        return self.path / self.log_path

    @property
    def hps(self) -> Path:
        return self.log / "hps.json"

    @property
    def greedy_csv(self) -> Path:
        return self.log / f"{self.name}.greedy.csv"

    def learner_log(self, role: str) -> Path:
        return self.log / ("valuerl.log" if role == "policy" else "worldmodel.log")

    def error_file(self, process_name: str) -> Path:
        return self.log / f"{process_name}.err"

    @property
    def checkpoints(self) -> Path:
        return self.path / self.save_model_path

    def checkpoint_dir(self, role: str) -> Path:
        return self.checkpoints / role

    @property
    def backups(self) -> Path:
        return self.checkpoints / "backups"

    @property
    def replay(self) -> Path:
        return self.path / "replay"

    def tensorboard(self, process_name: str) -> Path:
        return self.path / "tensorboard" / process_name

    @property
    def state(self) -> Path:
        return self.path / "state"

    @property
    def progress_file(self) -> Path:
        return self.state / "progress.bin"

    @property
    def finished_file(self) -> Path:
        return self.state / "finished.json"

    def make_dirs(self) -> None:
        for d in (self.log, self.checkpoints, self.backups, self.state):
            d.mkdir(parents=True, exist_ok=True)


class Progress:
    """Shared int64 counters in `state/progress.bin` (one writer per field, many readers)."""

    def __init__(self, path: str | os.PathLike, create: bool = False):
        path = Path(path)
        if create and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            np.zeros(len(PROGRESS_FIELDS), dtype=np.int64).tofile(tmp)
            os.replace(tmp, path)
        self._array = np.memmap(path, dtype=np.int64, mode="r+", shape=(len(PROGRESS_FIELDS),))

    def get(self, field: str) -> int:
        return int(self._array[PROGRESS_FIELDS.index(field)])

    def set(self, field: str, value: int) -> None:
        self._array[PROGRESS_FIELDS.index(field)] = value


def append_greedy_row(path: str | os.PathLike, hours: float, epoch: int, frames: int,
                      score: float) -> None:
    """Append one `hours,epoch,frames,score` line under an exclusive lock, whole.

    Several evaluators append to the same file; the lock and a single write of the whole line
    keep lines from interleaving.
    """
    line = f"{hours:.6f},{epoch},{frames},{score:.6f}\n"
    # LOCK_NB: portalocker retries a non-blocking lock until `timeout`; a blocking one would
    # ignore the timeout (and say so with a UserWarning in every evaluator's log).
    with portalocker.Lock(str(path), mode="a", timeout=30,
                          flags=portalocker.LOCK_EX | portalocker.LOCK_NB) as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def last_greedy_row(path: str | os.PathLike) -> tuple[float, int, int, float] | None:
    """The newest complete row of a greedy.csv (read from its end), or None."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            tail = f.read().decode(errors="replace")
    except FileNotFoundError:
        return None
    for line in reversed(tail.splitlines()):
        if not tail.endswith("\n") and line == tail.splitlines()[-1]:
            continue  # a line still being written
        parts = line.split(",")
        if len(parts) == 4:
            try:
                return float(parts[0]), int(parts[1]), int(parts[2]), float(parts[3])
            except ValueError:
                continue
    return None
