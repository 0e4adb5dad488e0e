"""The on-disk layout of one run, and the small shared state its processes exchange.

Every process of a run opens the same folder (2018 layout, extended):

    <output_root>/<ENV>/<EXPERIMENT>/          EXPERIMENT = config file name [+ ".seed<S>"]
        log/hps.json                           the resolved config (+ name, seed), real JSON
        log/valuerl.log, log/worldmodel.log    learner lines: hours, epoch, updates, frames, losses
        log/<EXPERIMENT>.greedy.csv            evaluator rows: hours,epoch,frames,score
        log/<process>.err                      the traceback of a process that died, if any
        log/<process>.out                      what a child printed (TensorFlow start-up lines...)
        checkpoints/policy/, checkpoints/worldmodel/     latest checkpoints (process/checkpoint.py)
        checkpoints/backups/<role>/<updates>/            numbered backups
        replay/                                the shared replay buffer (replay.py)
        tensorboard/<role>/                    TensorBoard summaries, x-axis = frames
        state/progress.bin                     shared counters (below)
        state/finished.json                    written when the run reached --total-frames
        state/owner.lock                       the run's lock and who holds it (RunLock)
        state/hours.json                       run hours so far, refreshed by the master

`Progress` is a tiny memory-mapped array of int64 counters (learner update counts and phases),
written by one process each and read by all: an aligned 8-byte store is atomic, so no lock is
needed. Frames are not counted here: the replay buffer's count is the frame counter. Its fields
are read and written by role (`updates(role)`, `set_counters`, `phase`, `set_phase`).

`find_checkpoints` says which checkpoints a path names (a run folder, its checkpoints/ or
backups/ folder, one backup or one ckpt-<n>), for the tools that load a trained agent
(visualizer.py, bench/target_quality.py); it reads only process/checkpoint.py's layout, no
TensorFlow.

`RunLock` makes one master the only owner of a run folder: an exclusive flock on
`state/owner.lock`, taken before the master writes anything and held, through a shared file
descriptor, by the master and every child until the last of them exits (so children still
writing final checkpoints after their master was killed keep the run theirs). The kernel drops
a flock when the last descriptor closes, however its holders died, so a stale lock never blocks
anyone. The file is never deleted while a run exists (`--overwrite` keeps it), so every process
locks the same inode; it holds one JSON line naming the holder, for refusals.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import portalocker

import util
from errors import UserError
from process import (
    checkpoint,  # its layout functions import no TensorFlow
    roles,
)
from process.checkpoint import CheckpointError

# state/progress.bin: an update count, an epoch and a phase per learner role (roles.LEARNERS).
PROGRESS_FIELDS = ("policy_updates", "worldmodel_updates", "policy_epoch", "worldmodel_epoch",
                   "policy_phase", "worldmodel_phase")
# A learner's phase (`<role>_phase` in Progress), for the master's status line.
PHASE_STARTING = 0  # importing TensorFlow, building, restoring
PHASE_WAITING_FOR_FRAMES = 1  # waiting for frames_before_learning frames
PHASE_WAITING_FOR_MODEL = 2  # the policy learner waits for a pretrained world model
PHASE_UPDATING = 3  # in the update loop (the first call compiles)
LOCK_ENV = "STEVE_RUN_LOCK_FD"  # a descriptor holding the run's lock, handed down by sweep.py


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

    @classmethod
    def at(cls, path: str | os.PathLike, save_model_path: str | None = None) -> RunDir:
        """The run folder `path`, read with the default layout (log/, and checkpoints/ unless
        `save_model_path` names the config's other folder)."""
        path = Path(path)
        return cls(root=str(path), name=path.name,
                   save_model_path=save_model_path or cls.save_model_path)

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

    def backup_dir(self, role: str) -> Path:
        """The numbered backups of a learner role: `<backups>/<role>/<updates>/`."""
        return self.backups / role

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

    @property
    def lock_file(self) -> Path:
        return self.state / "owner.lock"

    @property
    def hours_file(self) -> Path:
        return self.state / "hours.json"

    def make_dirs(self) -> None:
        for d in (self.log, self.checkpoints, self.backups, self.state):
            d.mkdir(parents=True, exist_ok=True)

    def has_content(self) -> bool:
        """True when the folder holds anything besides the run's lock file."""
        if not self.path.is_dir():
            return False
        for entry in self.path.iterdir():
            if entry.name != self.state.name or not entry.is_dir():
                return True
            if any(p.name != self.lock_file.name for p in entry.iterdir()):
                return True
        return False

    def clear(self) -> None:
        """Delete everything in the folder except the lock file (see RunLock): --overwrite."""
        import shutil

        for entry in self.path.iterdir():
            if entry == self.state and entry.is_dir():
                for inner in entry.iterdir():
                    if inner.name == self.lock_file.name:
                        continue
                    if inner.is_dir() and not inner.is_symlink():
                        shutil.rmtree(inner)
                    else:
                        inner.unlink()
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def find_run_folder(path: str | os.PathLike) -> Path | None:
    """The run folder at or above `path` (the run itself or any folder inside it): the nearest one
    holding log/hps.json, where master.py saves the resolved config. None when there is none."""
    path = Path(path)
    for folder in (path, *path.parents):
        if RunDir.at(folder).hps.is_file():
            return folder
    return None


class RunLocked(UserError):
    """The run is owned by another process; the message names it."""


class RunLock:
    """The exclusive lock on one run folder (see the module docstring).

    `acquire()` never waits: it either takes the lock or raises RunLocked naming the holder.
    `fd` is the descriptor holding it; pass `inherit()` to a child process to share the lock.
    """

    def __init__(self, run: RunDir):
        self.run = run
        self.path = run.lock_file
        self.fd: int | None = None
        self._created: list[Path] = []  # folders this lock created, deepest last

    def acquire(self, inherited: int | None = None) -> None:
        """Take the lock; `inherited`: a descriptor on the same file that may already hold it
        (a sweep guard's), used instead of a new one when it refers to this file."""
        if inherited is not None and self._same_file(inherited):
            try:
                fcntl.flock(inherited, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already: no-op
            except BlockingIOError:
                raise RunLocked(self._refusal()) from None
            self.fd = inherited
            return
        self._make_state_dir()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunLocked(self._refusal()) from None
            if self._same_file(fd):
                self.fd = fd
                return
            os.close(fd)  # the file was removed (a refused start cleaning up): take the new one

    def _same_file(self, fd: int) -> bool:
        try:
            here, there = os.fstat(fd), os.stat(self.path)
        except OSError:
            return False
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)

    def _make_state_dir(self) -> None:
        missing = []
        d = self.path.parent
        while not d.exists():
            missing.append(d)
            d = d.parent
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._created = list(reversed(missing))

    def record_holder(self, command: str) -> None:
        """Write who holds the lock into the lock file (read by refusals)."""
        text = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command})
        data = (text + "\n").encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)

    def _refusal(self) -> str:
        holder = describe_holder(self.path)
        return (f"{self.run.path} is in use by {holder}; wait for it to end or stop it first "
                f"(nothing was changed).")

    def release(self, discard: bool = False) -> None:
        """Drop this process's hold. `discard`: also remove the lock file and the folders
        `acquire` created (a start refused before it wrote anything)."""
        if self.fd is None:
            return
        if discard and self._created:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            for d in reversed(self._created):
                try:
                    d.rmdir()
                except OSError:
                    break
        os.close(self.fd)
        self.fd = None

    def inherit(self) -> InheritedLock:
        """What to pass to a spawned child so that it holds the lock too."""
        return InheritedLock(self.fd)


def describe_holder(path: str | os.PathLike) -> str:
    """'master.py (pid 123 on host, since 2025-01-01 12:00:00)' from a lock file."""
    try:
        info = json.loads(Path(path).read_text().strip() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process (it has not said which yet)"
    text = (f"{info.get('command', 'a process')} (pid {info['pid']} on {info.get('host', '?')}, "
            f"since {info.get('since', '?')})")
    if info.get("host") == socket.gethostname() and not os.path.exists(f"/proc/{info['pid']}"):
        pids = ", ".join(map(str, processes_holding(path))) or "?"
        text += (f", which died; its child processes (pids {pids}) are still writing their "
                 f"final checkpoints")
    return text


def processes_holding(path: str | os.PathLike) -> list[int]:
    """Pids of this machine's processes with `path` open (read from /proc; Linux only)."""
    target = os.path.realpath(path)
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.path.realpath(fd) == target for fd in fd_dir.iterdir()):
                found.append(int(fd_dir.parent.name))
        except OSError:
            continue
    return sorted(found)


class InheritedLock:
    """A run lock's descriptor on its way to a spawned child: pickling it makes
    multiprocessing duplicate the descriptor into the child (the same open file, so the same
    lock). The child just keeps it open until it exits."""

    def __init__(self, fd: int | None):
        self.fd = fd

    def __reduce__(self):
        from multiprocessing import reduction

        return _rebuild_inherited, (reduction.DupFd(self.fd),)


def _rebuild_inherited(dup) -> InheritedLock:
    return InheritedLock(dup.detach())


class Progress:
    """Shared int64 counters in `state/progress.bin` (one writer per field, many readers)."""

    def __init__(self, path: str | os.PathLike, create: bool = False, read_only: bool = False):
        """`create`: make the file when it is missing or has another number of fields (a run
        started by an older version: its counters are set again from the checkpoints).
        `read_only`: only `get` (a reader of another machine's run, such as sweep.py)."""
        path = Path(path)
        size = 8 * len(PROGRESS_FIELDS)
        if create and not (path.exists() and path.stat().st_size == size):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            np.zeros(len(PROGRESS_FIELDS), dtype=np.int64).tofile(tmp)
            os.replace(tmp, path)
        self._array = np.memmap(path, dtype=np.int64, mode="r" if read_only else "r+",
                                shape=(len(PROGRESS_FIELDS),))

    def get(self, field: str) -> int:
        return int(self._array[PROGRESS_FIELDS.index(field)])

    def set(self, field: str, value: int) -> None:
        self._array[PROGRESS_FIELDS.index(field)] = value

    # The fields by role (roles.LEARNERS): the one place that spells `<role>_<counter>`.
    def updates(self, role: str) -> int:
        return self.get(progress_field(role, "updates"))

    def epoch(self, role: str) -> int:
        return self.get(progress_field(role, "epoch"))

    def phase(self, role: str) -> int:
        return self.get(progress_field(role, "phase"))

    def waiting_for_learner(self, role: str) -> bool:
        """Whether that learner waits for another learner (the policy learner for the world
        model's first pretrained checkpoint): it then holds no interactor
        (roles.learners_behind)."""
        return self.phase(role) == PHASE_WAITING_FOR_MODEL

    def set_counters(self, role: str, updates: int, epoch: int) -> None:
        self.set(progress_field(role, "updates"), updates)
        self.set(progress_field(role, "epoch"), epoch)

    def set_phase(self, role: str, phase: int) -> None:
        self.set(progress_field(role, "phase"), phase)


def progress_field(role: str, counter: str) -> str:
    """The name of a learner role's counter ("updates", "epoch" or "phase") in PROGRESS_FIELDS,
    e.g. "policy_updates"; state/finished.json uses the same names for the update counts."""
    return f"{role}_{counter}"


def finished_record(total_frames: int, frames: int, updates: dict[str, int]) -> dict:
    """The contents of state/finished.json: the budget, the frames collected and each learner
    role's update count (as `<role>_updates`)."""
    return {"total_frames": total_frames, "frames": frames,
            **{progress_field(role, "updates"): n for role, n in updates.items()}}


def append_greedy_row(path: str | os.PathLike, hours: float, epoch: int, frames: int,
                      score: float) -> None:
    """Append one `hours,epoch,frames,score` line under an exclusive lock, whole.

    Several evaluators append to the same file; the lock and a single write of the whole line
    keep lines from interleaving, and a write cut short by a full disk is undone
    (util.append_line), so no later row continues half of one.
    """
    line = f"{hours:.6f},{epoch},{frames},{score:.6f}"
    # LOCK_NB: portalocker retries a non-blocking lock until `timeout`; a blocking one would
    # ignore the timeout (and say so with a UserWarning in every evaluator's log).
    with portalocker.Lock(str(path), mode="a", timeout=30,
                          flags=portalocker.LOCK_EX | portalocker.LOCK_NB):
        util.append_line(path, line, fsync=True)


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


# ------------------------------------------------------------------------------ checkpoints
#
# Which checkpoints a path names, for the tools that load a trained agent (visualizer.py,
# bench/target_quality.py): a run folder, its checkpoints/ or backups/ folder, one numbered
# backup or one ckpt-<n> folder. Reads only the checkpoint layout (process/checkpoint.py: no
# TensorFlow).


@dataclass(frozen=True)
class Checkpoints:
    """The checkpoint folders to restore, and the run they belong to (None if unknown)."""

    policy: Path
    worldmodel: Path | None
    run_root: Path | None


def _newest(role_dir: Path) -> Path | None:
    """The newest complete checkpoint in a role folder: checkpoint.latest_checkpoint's (the
    `ckpt-<n>` latest.json points to, else the highest complete one), else its highest numbered
    backup."""
    if not role_dir.is_dir():
        return None
    latest = checkpoint.latest_checkpoint(str(role_dir))
    if latest is not None:
        return Path(latest)
    numbered = [p for p in role_dir.iterdir() if p.name.isdigit() and checkpoint.is_complete(p)]
    return max(numbered, key=lambda p: int(p.name)) if numbered else None


def _nearest_by_frames(candidates: list[Path], frames: int) -> Path | None:
    """The candidate with the most frames not beyond `frames` (else the one with the fewest),
    ties broken by the most updates."""
    def key(p: Path) -> tuple[int, int]:
        c = checkpoint.read_counters(p)
        return int(c.get("frames", 0)), int(c.get("updates", 0))

    if not candidates:
        return None
    before = [p for p in candidates if key(p)[0] <= frames]
    if before:
        return max(before, key=key)
    return min(candidates, key=key)


def _role_candidates(role_dir: Path) -> list[Path]:
    if not role_dir.is_dir():
        return []
    return [p for p in role_dir.iterdir() if checkpoint.is_complete(p)]


def _run_root(path: Path, save_model_path: str) -> Path | None:
    """The run folder holding `path`: the parent of its nearest ancestor named like the config's
    save_model_path (e.g. `checkpoints`)."""
    name = Path(save_model_path).name
    for folder in (path, *path.parents):
        if folder.name == name:
            return folder.parent
    return None


def find_checkpoints(checkpoint_dir: str | os.PathLike, config: dict,
                     label: str = "the config") -> Checkpoints:
    """Resolve CHECKPOINT_DIR into the policy (and world-model) checkpoint folders to load;
    `label` names the config in messages."""
    import config as config_lib

    given = Path(checkpoint_dir)
    path = given.resolve()
    model_based = config_lib.is_model_based(config)
    save_model_path = config.get("save_model_path") or "checkpoints"
    hint = (f"give a run's {save_model_path}/ folder or one of its numbered backups such as "
            f"{save_model_path}/backups/policy/<updates>/")
    if not path.exists():
        raise CheckpointError(f"checkpoint folder {given} does not exist; {hint}.")
    if not path.is_dir():
        raise CheckpointError(f"{given} is a file, not a checkpoint folder; {hint}.")

    if not (path / "policy").is_dir() and (path / save_model_path / "policy").is_dir():
        path = path / save_model_path  # the run folder itself
    if (path / "policy").is_dir():  # a checkpoints/ (or backups/) folder
        return _newest_in_folder(path, model_based, save_model_path, label, hint)

    if checkpoint.is_complete(path):  # one checkpoint: a numbered backup or a ckpt-<n> folder
        return _around_one_checkpoint(given, path, model_based, save_model_path, label, hint)
    raise CheckpointError(f"{given} holds no STEVE checkpoint (neither a policy/ folder nor "
                          f"variables.index and counters.json); {hint}.")


def _around_one_checkpoint(given: Path, path: Path, model_based: bool, save_model_path: str,
                           label: str, hint: str) -> Checkpoints:
    """find_checkpoints for one checkpoint folder (a numbered backup or a `ckpt-<n>`): it and
    the other learner's checkpoint nearest to it in frames."""
    role = path.parent.name
    if role not in roles.LEARNERS:
        raise CheckpointError(f"{given} is a checkpoint but not inside a policy/ or "
                              f"worldmodel/ folder, so it is unclear what it holds; {hint}.")
    run_root = _run_root(path, save_model_path)
    frames = int(checkpoint.read_counters(path).get("frames", 0))
    holds_model = roles.ROLE[role].model_only  # else it holds the policy
    (other_role,) = [r for r in roles.LEARNERS if r != role]
    if holds_model or model_based:
        other = _nearest_by_frames(_role_candidates(path.parent.parent / other_role), frames)
        if other is None and run_root is not None:
            other = _newest(run_root / save_model_path / other_role)
    else:
        other = None
    if not holds_model:
        if model_based and other is None:
            raise CheckpointError(f"no world-model checkpoint was found next to {given} "
                                  f"(looked in {path.parent.parent / 'worldmodel'}); this "
                                  f"model-based config needs one, so {hint}.")
        return Checkpoints(path, other, run_root)
    if not model_based:
        raise CheckpointError(f"{given} is a world-model checkpoint but {label} is "
                              f"model-free; give a policy checkpoint folder instead.")
    if other is None:
        raise CheckpointError(f"no policy checkpoint was found next to the world-model "
                              f"checkpoint {given}; {hint}.")
    return Checkpoints(other, path, run_root)


def _newest_in_folder(path: Path, model_based: bool, save_model_path: str, label: str,
                      hint: str) -> Checkpoints:
    """find_checkpoints for a folder holding `policy/` (and `worldmodel/`): a run's checkpoints/
    or its backups/; the newest checkpoint of each."""
    policy = _newest(path / "policy")
    if policy is None:
        raise CheckpointError(f"{path / 'policy'} holds no complete checkpoint yet; wait for "
                              f"the policy learner's first save, or {hint}.")
    worldmodel = _newest(path / "worldmodel") if model_based else None
    if model_based and not (path / "worldmodel").is_dir():
        raise CheckpointError(f"{path} has no worldmodel/ folder, so it comes from a "
                              f"model-free run, but {label} is model-based; give the config "
                              f"the run was made with.")
    if model_based and worldmodel is None:
        raise CheckpointError(f"{path / 'worldmodel'} holds no complete world-model "
                              f"checkpoint, which this model-based config needs; wait for "
                              f"the world-model learner's first save, or {hint}.")
    return Checkpoints(policy, worldmodel, _run_root(path, save_model_path))
