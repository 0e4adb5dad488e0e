"""The fault loop: hurt a small run at a random moment in one of four ways, resume, N times.

    .venv/bin/python bench/fault_loop.py [--rounds 50] [--config tests/configs/tiny_steve.json]
        [--output-root /tmp/steve-fault-loop]
        [--faults kill=0.55,stop=0.15,truncate=0.15,disk=0.15] [--kill-after 2 20]
        [--startup-share 0.2] [--stall-timeout 10] [--tmpfs-mb 1024] [--seed 0]
        [--max-minutes M]

Run by hand (and for a few rounds by tests/test_fault_loop.py). It starts `master.py` on the config
(through a derived config, `<output root>/fault_<name>.json`, whose replay ring is large enough
that no frame of the loop is ever overwritten, and with a frame budget the loop never reaches).
Each round has one fault class; --faults gives each class its share of the rounds (rounded,
largest remainders first) and the rounds get them in a random order. Each round:
1. starts master.py (a new run the first time, `--resume` afterwards), its console going to
   `<output root>/round<k>.log`;
2. waits a random time, uniform in --kill-after, counted from the policy learner's first update
   of the round (and, the first time, its first checkpoint, so there is something to resume),
   and from what the fault class needs besides (below);
3. takes what a user relies on just before the fault: the replay count and every visible row,
   greedy.csv's complete lines, and the learners' live update counters (state/progress.bin);
4. applies the fault (below), and waits for every process of the run to exit; one still alive
   90 s after the run should have ended is an orphan (counted, then killed);
5. checks: the replay count did not decrease; every row visible before is unchanged and every
   visible row is finite; greedy.csv parses whole and begins with its lines from before the
   fault; each learner lost at most one epoch of updates (its live counter before the fault
   against the checkpoint the run resumes from).

The fault classes:
- `kill`: SIGKILL of one process of the run chosen at random, the master or one of its children
  (learners, interactors, evaluators). In a share of these rounds (--startup-share, default 0.2,
  never the first round) the kill comes instead at a random moment of the start-up (0 to MAX
  seconds after master.py started). The next round resumes.
- `stop`: SIGSTOP of one child chosen at random (a stand-in for a hung GPU call or a dead
  network mount), in a round whose master.py runs with `--stall-timeout` (default 10 s). The
  stop comes once every learner has written a checkpoint and every evaluator its TensorBoard
  file in this round: then every child has done its first-time work and has the short
  allowance (the longer start-up allowance, 600 s, would outlast the loop's patience). Checks
  that master.py names the child (`error: <name> (pid <pid>) showed no sign of life`) and
  exits with status 3 within the stall timeout + STALL_MARGIN seconds. The next round resumes.
- `truncate`: SIGKILL of the master and all its children at once (so no final checkpoints),
  then the data file of the newest checkpoint of a learner, chosen at random among those with
  two or more, is cut short (to fewer than CUT_BYTES bytes, so that every variable's value is
  cut). master.py --resume is started at once (step 6).
  Checks that this learner's log says it resumed from the checkpoint before the cut one,
  passing over the cut one. Its lost updates count against that older checkpoint, and it may
  lose up to two epochs: the newest checkpoint can be up to one epoch behind the live counter
  (the next one was being written), and the one before it is one more epoch older (or less,
  when it is a final checkpoint written between epochs).
- `disk`: the run lives on a tmpfs of --tmpfs-mb MB (default 1024) that the loop mounts at
  `<output root>/disk` when the class has a share (the replay ring is allocated whole when the
  run is created: for the tiny configs about 210 MB, so it must fit). A filler file then takes
  all the free space. Checks that master.py exits with status 2 within DISK_SECONDS, with one
  `error:` line naming the mount point and no traceback on its console; then deletes the filler
  and resumes (step 6). Where no tmpfs can be mounted (not root, a container without the
  capability), these rounds are skipped, said once, and counted as skipped.
6. (`truncate` and `disk`) `master.py --resume` in the same round, its console appended to the
   round's log: every learner with a checkpoint must say in its log which checkpoint it resumed
   from, and the policy learner must write a newer checkpoint than it resumed from; then
   SIGTERM stops the run (status 0 expected) and the checks of step 5 follow, the lost updates
   counted against the checkpoints the learners said they resumed from.

It prints one line per round, then one line per fault class and the summary:

    fault=kill rounds=N passed=N failed=0 skipped=0 lost_epochs_max=X
    ...
    fault_rounds=N lost_epochs_max=X torn_rows=0 orphans=0 failed_rounds=0

`fault_rounds` counts the rounds run (not the skipped ones), `lost_epochs_max` the most any
learner lost in any of them (up to 2 in `truncate` rounds), `torn_rows` the replay rows changed
or not finite and the greedy.csv lines changed or unreadable. With --max-minutes, no round
starts after that much time (the summary counts the rounds run). The exit status is 0 when no
round failed. Writes only under the output root; a tmpfs the loop mounted is unmounted at the
end, after the run's log folder was copied to `<output root>/run-log/` (a tmpfs that was already
mounted at `<output root>/disk` is used and left mounted: mount one there to keep the run).
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

# The project modules this bench uses, all here (a move into packages changes only these lines).
import config as config_lib  # noqa: E402
import replay  # noqa: E402
from process import checkpoint  # noqa: E402
from process.roles import LEARNERS, ROLE  # noqa: E402
from process.rundir import Progress, RunDir  # noqa: E402
from util import process_alive, process_cmdline, process_descendants  # noqa: E402

BUDGET = 10**9  # frames: the loop never reaches it
REPLAY_SIZE = 2_000_000  # rows: no frame of the loop is ever overwritten
ORPHAN_SECONDS = 90.0
START_SECONDS = 300.0  # how long a round may take to reach its fault's moment
FAULTS = ("kill", "stop", "truncate", "disk")
DEFAULT_FAULTS = "kill=0.55,stop=0.15,truncate=0.15,disk=0.15"
ALLOWED_EPOCHS = 1.0  # what a learner may lose to a fault
TRUNCATED_EPOCHS = 2.0  # ...and the learner whose newest checkpoint was cut (module docstring)
STALL_TIMEOUT = 10.0  # master.py --stall-timeout in `stop` rounds
# Beyond the stall timeout: the master's stall check runs with its status line (every 5 s),
# the stalled child gets 10 s from SIGTERM to SIGKILL, and the others write final checkpoints.
STALL_MARGIN = 60.0
# From the filler to master.py's exit: its next state write (every 5 s) or a child's, and the
# others' stop (at most GRACE_SECONDS, 60 s, before the master kills them).
DISK_SECONDS = 120.0
RESUME_SECONDS = 300.0  # for a resumed run to say where it resumed from and checkpoint anew
STOP_SECONDS = 120.0  # for a run stopped by SIGTERM to write final checkpoints and exit
TMPFS_MB = 1024
DATA_FILES = checkpoint.PREFIX + ".data-*"  # in a checkpoint folder: the variables' values
# A cut data file keeps fewer bytes than this. Cut to half, a tiny network's checkpoint still
# reads: its variables come first, and only the object graph stored after them (which
# checkpoint.restore_checkpoint does not read) is lost.
CUT_BYTES = 64
_RESUMED = re.compile(r"resumed from (\S+?)(?:, not from the newer (.*), which cannot be read)?$")


def _process_names(run: RunDir, pids: list[int]) -> dict[int, str]:
    """pid -> process name (policy-learner, interactor-0...), from each child's first line in
    log/<name>.out ("<name> (pid N): ...")."""
    names = {}
    for out in run.log.glob("*.out"):
        try:
            text = out.read_text(errors="replace")
        except OSError:
            continue
        for pid in pids:
            if f"{out.stem} (pid {pid})" in text:
                names[pid] = out.stem
    return names


class Snapshot:
    """What a user relies on, read from the run folder (no process of the run is needed)."""

    def __init__(self, run: RunDir):
        with replay.ReplayBuffer.open(run.replay) as buf:
            self.count = buf.count
            slots = buf.slots
        path = run.replay / "frames.f32"
        row = path.stat().st_size // (4 * slots)  # float32 per frame, simulator states included
        frames = np.memmap(path, dtype="<f4", mode="r", shape=(slots, row))
        self.rows = np.array(frames[: min(self.count, slots)])
        del frames
        try:
            text = run.greedy_csv.read_bytes()
        except FileNotFoundError:
            text = b""
        self.greedy = text[: text.rfind(b"\n") + 1]  # complete lines only
        self.updates = {}
        if run.progress_file.exists():
            progress = Progress(run.progress_file)
            self.updates = {role: progress.updates(role) for role in LEARNERS}


def _bad_greedy_lines(text: bytes) -> int:
    bad = 0
    for line in text.decode(errors="replace").splitlines():
        parts = line.split(",")
        try:
            ok = len(parts) == 4 and all(math.isfinite(float(p)) for p in parts)
            int(parts[1]), int(parts[2])
        except (ValueError, IndexError):
            ok = False
        bad += not ok
    return bad


def derived_config(config: Path, root: Path) -> Path:
    """`<root>/fault_<name>.json`: the config with a replay ring the loop never fills."""
    cfg = config_lib.load_config(config)
    updates = {"policy_config": {"replay_size": REPLAY_SIZE}}
    if config_lib.is_model_based(cfg):
        updates["model_config"] = {"replay_size": REPLAY_SIZE}
    path = root / f"fault_{config.stem}.json"
    path.write_text(json.dumps({"inherits": [str(config.resolve())], "updates": updates},
                               indent=2) + "\n")
    return path


def parse_faults(text: str) -> dict[str, float]:
    """"kill=0.55,stop=0.15,..." -> {class: share}; ValueError naming what is wrong."""
    shares: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        if name not in FAULTS:
            raise ValueError(f"unknown fault class {name!r} (the classes: {', '.join(FAULTS)})")
        try:
            share = float(value) if sep else math.nan
        except ValueError:
            share = math.nan
        if not share >= 0 or math.isinf(share):
            raise ValueError(f"{item.strip()!r} needs a share, a number 0 or more "
                             f"(e.g. {name}=0.2)")
        shares[name] = share
    if not sum(shares.values()) > 0:
        raise ValueError("every share is 0; give at least one class a share above 0")
    return shares


def plan_faults(shares: dict[str, float], rounds: int, rng: random.Random) -> list[str]:
    """The rounds' fault classes: each class its share of `rounds` (rounded down, then one more
    for the largest remainders), in a random order."""
    total = sum(shares.values())
    exact = {c: rounds * shares.get(c, 0.0) / total for c in FAULTS}
    counts = {c: int(x) for c, x in exact.items()}
    by_remainder = sorted(FAULTS, key=lambda c: counts[c] - exact[c])  # stable: FAULTS order
    for c in by_remainder[: rounds - sum(counts.values())]:
        counts[c] += 1
    plan = [c for c in FAULTS for _ in range(counts[c])]
    rng.shuffle(plan)
    return plan


def _tmpfs_at(path: Path) -> bool:
    """Whether a tmpfs is mounted at `path` itself."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    return any(len(f) > 2 and f[2] == "tmpfs" and f[1] == str(path)
               for f in (line.split() for line in mounts))


def mount_tmpfs(path: Path, megabytes: int) -> str:
    """Mount a tmpfs of `megabytes` at `path`; "" when done, else why it could not be."""
    path.mkdir(parents=True, exist_ok=True)
    if any(path.iterdir()):
        return f"{path} is not empty; the tmpfs would hide its files"
    try:
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m",
                              "steve-fault-loop", str(path)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"mount could not run ({e})"
    if out.returncode != 0:
        return (out.stderr.strip() or out.stdout.strip() or f"mount exited {out.returncode}")
    return ""


def fill_disk(path: Path) -> int:
    """Write the file `path` until its disk is full; the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (16 << 20, 64 << 10, 4096):
            block = bytes(size)
            while True:
                try:
                    written += os.write(fd, block)
                except OSError as e:
                    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    break
    finally:
        os.close(fd)
    return written


def _start_master(config: Path, root: Path, seed: int, resume: bool, log: Path,
                  extra: tuple[str, ...] = ()) -> subprocess.Popen:
    argv = [sys.executable, str(PROJECT / "master.py"), str(config), "0", "--output-root",
            str(root), "--total-frames", str(BUDGET), "--seed", str(seed), *extra]
    if resume:
        argv.append("--resume")
    with open(log, "ab") as out:
        return subprocess.Popen(argv, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _checkpoint_updates(run: RunDir, role: str) -> int:
    pointer = checkpoint.pointer_file(run.checkpoint_dir(role))
    try:
        return int(json.loads(pointer.read_text())["counters"]["updates"])
    except (OSError, ValueError, KeyError):
        return 0


def _live_updates(run: RunDir, role: str) -> int:
    try:
        return Progress(run.progress_file).updates(role)
    except (OSError, ValueError):
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class Loop:
    """The fault loop's run, random choices and tallies; `round` runs one round (module
    docstring)."""

    def __init__(self, config: Path, root: Path, seed: int, kill_after: tuple[float, float],
                 say, startup_share: float, stall_timeout: float, tmpfs_mb: int):
        self.config, self.root, self.seed = config, root, seed
        self.kill_after, self.say = kill_after, say
        self.startup_share, self.stall_timeout, self.tmpfs_mb = \
            startup_share, stall_timeout, tmpfs_mb
        self.rng = random.Random(seed)
        self.running: list[subprocess.Popen] = []
        self.totals = {"fault_rounds": 0, "lost_epochs_max": 0.0, "torn_rows": 0, "orphans": 0,
                       "failed_rounds": 0}
        self.classes = {c: {"rounds": 0, "passed": 0, "failed": 0, "skipped": 0,
                            "lost_epochs_max": 0.0} for c in FAULTS}
        self.disk: Path | None = None  # the tmpfs the run lives on, in a loop with disk rounds
        self.mounted = False  # whether the loop mounted it (and unmounts it at the end)
        self.disk_note = ""  # why disk rounds are skipped
        self.filler: Path | None = None
        self.run: RunDir | None = None

    # ------------------------------------------------------------------ setup, teardown
    def setup(self, with_disk: bool) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        run_root = self.root
        if with_disk:
            disk = self.root / "disk"
            if _tmpfs_at(disk):
                self.disk = disk
            else:
                why = mount_tmpfs(disk, self.tmpfs_mb)
                if why:
                    self.disk_note = f"no tmpfs could be mounted at {disk}: {why}"
                    self.say(f"disk rounds will be skipped: {self.disk_note}")
                else:
                    self.disk, self.mounted = disk, True
            if self.disk is not None:
                run_root = self.disk
                self.filler = self.disk / "filler"
                self.filler.unlink(missing_ok=True)  # a loop killed during a disk round
        self.fault_config = derived_config(self.config, self.root)
        cfg = config_lib.load_config(self.fault_config)
        self.run = RunDir.for_config(cfg, config_lib.experiment_name(self.fault_config),
                                     self.seed, str(run_root))
        self.run_root = run_root
        self.epoch_every = {"policy": cfg["policy_config"]["epoch_every_n"]}
        if config_lib.is_model_based(cfg):
            self.epoch_every["worldmodel"] = cfg["model_config"]["epoch_every_n"]

    def teardown(self) -> None:
        if self.filler is not None:
            self.filler.unlink(missing_ok=True)
        if not self.mounted:
            return
        if self.run is not None and self.run.log.is_dir():
            shutil.copytree(self.run.log, self.root / "run-log", dirs_exist_ok=True)
        out = subprocess.run(["umount", str(self.disk)], capture_output=True, text=True)
        if out.returncode != 0:
            self.say(f"could not unmount the tmpfs at {self.disk}: {out.stderr.strip()}; "
                     f"`umount {self.disk}` frees its memory")

    # ------------------------------------------------------------------ helpers
    def _start(self, k: int, resume: bool, extra: tuple[str, ...] = ()) -> subprocess.Popen:
        proc = _start_master(self.fault_config, self.run_root, self.seed, resume,
                             self.root / f"round{k}.log", extra)
        self.running.append(proc)
        return proc

    def _wait_for_moment(self, proc: subprocess.Popen, started: float, resumed_at: int,
                         startup: bool, ready=lambda: True) -> str:
        """Wait until the fault's moment (module docstring, step 2) or master.py's exit;
        "startup" or "training", the kind of moment."""
        if startup:  # any moment of the start-up: TensorFlow, restores, compiling
            moment, wait = "startup", self.rng.uniform(0.0, self.kill_after[1])
        else:  # counted from the policy learner's first update of the round
            moment = "training"
            deadline = time.time() + START_SECONDS
            pointer = checkpoint.pointer_file(self.run.checkpoint_dir("policy"))
            while not (_live_updates(self.run, "policy") > resumed_at and pointer.exists()
                       and ready()):
                if proc.poll() is not None or time.time() > deadline:
                    break
                time.sleep(0.1)
            wait = time.time() - started + self.rng.uniform(*self.kill_after)
        while time.time() - started < wait and proc.poll() is None:
            time.sleep(0.05)
        return moment

    def _children(self, proc: subprocess.Popen) -> list[tuple[int, str]]:
        """(pid, name) of master.py's named children (not multiprocessing's helpers)."""
        named = _process_names(self.run, sorted(process_descendants(proc.pid)))
        return sorted((pid, name) for pid, name in named.items()
                      if "resource_tracker" not in process_cmdline(pid))

    def _wait_all_exit(self, proc: subprocess.Popen, family: set[int],
                       since: float) -> list[int]:
        """Wait for every process of `family` to exit, ORPHAN_SECONDS after `since` at most;
        kill and return those still alive (the orphans)."""
        while ([p for p in family if process_alive(p)]
               and time.time() - since < ORPHAN_SECONDS):
            proc.poll()
            time.sleep(0.1)
        proc.poll()
        orphans = [p for p in family if process_alive(p)]
        for p in orphans:
            os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait()
        if proc in self.running:
            self.running.remove(proc)
        return orphans

    def _wait_exit(self, proc: subprocess.Popen, seconds: float) -> float | None:
        """Seconds until master.py exited, or None when it still runs after `seconds`."""
        t0 = time.time()
        while proc.poll() is None and time.time() - t0 < seconds:
            time.sleep(0.1)
        return None if proc.poll() is None else time.time() - t0

    def _expect_exit(self, proc: subprocess.Popen, family: set[int], seconds: float,
                     status: int, after: str, problems: list[str]) -> float | None:
        """Wait up to `seconds` for master.py to exit with `status`; note a problem if it does
        not, killing its family (refreshed first) when it still runs. The seconds it took, or
        None."""
        took = self._wait_exit(proc, seconds)
        if took is None:
            problems.append(f"master.py still ran {seconds:.0f} s after {after}")
            for p in family | self._family(proc):
                if process_alive(p):
                    os.kill(p, signal.SIGKILL)
        elif proc.returncode != status:
            problems.append(f"master.py exited with status {proc.returncode}, not {status}")
        return took

    def _family(self, proc: subprocess.Popen) -> set[int]:
        return {proc.pid} | process_descendants(proc.pid)

    def _complete_counters(self) -> dict[tuple[str, str], int]:
        """(role, checkpoint folder name) -> the updates it holds, for every complete
        checkpoint of the learners (read before a resume, which may prune them)."""
        found = {}
        for role in self.epoch_every:
            for path in checkpoint.complete_checkpoints(str(self.run.checkpoint_dir(role))):
                found[role, os.path.basename(path)] = int(
                    checkpoint.read_counters(path).get("updates", 0))
        return found

    def _resume_and_stop(self, k: int, problems: list[str]) -> dict[str, tuple[str, str]]:
        """Step 6 of the module docstring: `--resume`, wait until every learner with a
        checkpoint said where it resumed from and the policy learner wrote a newer one, stop
        with SIGTERM. Returns {role: (checkpoint resumed from, what it passed over or "")}."""
        roles = [r for r in self.epoch_every
                 if checkpoint.complete_checkpoints(str(self.run.checkpoint_dir(r)))]
        logs = {r: self.run.log / ROLE[r].log for r in roles}
        offsets = {r: _size(path) for r, path in logs.items()}
        pointer = checkpoint.pointer_file(self.run.checkpoint_dir("policy"))
        resumed = time.time()
        proc = self._start(k, resume=True)
        said: dict[str, tuple[str, str]] = {}
        deadline = time.time() + RESUME_SECONDS
        while proc.poll() is None and time.time() < deadline:
            for r in roles:
                for line in _read_from(logs[r], offsets[r]).splitlines():
                    found = _RESUMED.search(line)
                    if found and r not in said:
                        said[r] = (found.group(1), found.group(2) or "")
            if len(said) == len(roles) and _mtime(pointer) > resumed:
                break  # every learner resumed, and the policy learner checkpointed anew
            time.sleep(0.2)
        family = self._family(proc)
        if proc.poll() is not None:
            problems.append(f"the resumed master.py exited with status {proc.returncode}")
        else:
            if time.time() >= deadline:
                problems.append(f"the resumed run did not say where it resumed from and "
                                f"checkpoint anew within {RESUME_SECONDS:.0f} s (said: "
                                f"{', '.join(said) or 'nothing'})")
            proc.send_signal(signal.SIGTERM)
            if self._wait_exit(proc, STOP_SECONDS) is None:
                problems.append(f"the resumed run did not stop within {STOP_SECONDS:.0f} s of "
                                f"SIGTERM")
            elif proc.returncode != 0:
                problems.append(f"the resumed run exited with status {proc.returncode} after "
                                f"SIGTERM")
        family |= self._family(proc) if proc.poll() is None else set()
        orphans = self._wait_all_exit(proc, family, time.time())
        self.totals["orphans"] += len(orphans)
        if orphans:
            problems.append(f"{len(orphans)} orphan(s) of the resumed run: {orphans}")
        return said

    def _check(self, before: Snapshot, after: Snapshot, saved: dict[str, int],
               allowed: dict[str, float], problems: list[str]) -> tuple[int, dict[str, int]]:
        """Step 5 of the module docstring: (torn rows and lines, {role: updates lost})."""
        torn = 0
        if after.count < before.count:
            problems.append(f"replay count went back from {before.count} to {after.count}")
        n = min(len(before.rows), len(after.rows))
        changed = int(np.sum(np.any(before.rows[:n] != after.rows[:n], axis=1)))
        changed += len(before.rows) - n
        not_finite = int(np.sum(~np.all(np.isfinite(after.rows), axis=1)))
        torn += changed + not_finite
        if changed or not_finite:
            problems.append(f"{changed} replay row(s) changed, {not_finite} not finite")
        if not after.greedy.startswith(before.greedy):
            common = os.path.commonprefix([before.greedy, after.greedy])
            lost_lines = before.greedy[len(common):].count(b"\n")
            torn += max(1, lost_lines)
            problems.append("greedy.csv lines from before the fault changed")
        bad = _bad_greedy_lines(after.greedy)
        torn += bad
        if bad:
            problems.append(f"{bad} unreadable greedy.csv line(s)")
        lost = {}
        for role, every in self.epoch_every.items():
            lost[role] = max(0, before.updates.get(role, 0) - saved.get(role, 0))
            epochs = lost[role] / every
            self.round_lost = max(self.round_lost, epochs)
            if epochs > allowed.get(role, ALLOWED_EPOCHS):
                problems.append(f"{role} lost {lost[role]} updates ({epochs:.2f} epochs)")
        return torn, lost

    def _pointer_updates(self) -> dict[str, int]:
        return {role: _checkpoint_updates(self.run, role) for role in self.epoch_every}

    def _report(self, k: int, rounds: int, fault: str, what: str, before: Snapshot,
                after: Snapshot, lost: dict[str, int], exited: float, torn: int,
                orphans: list[int], problems: list[str]) -> None:
        self.totals["fault_rounds"] += 1
        self.totals["torn_rows"] += torn
        self.totals["orphans"] += len(orphans)
        self.totals["lost_epochs_max"] = max(self.totals["lost_epochs_max"], self.round_lost)
        tally = self.classes[fault]
        tally["lost_epochs_max"] = max(tally["lost_epochs_max"], self.round_lost)
        self._tally(fault, "failed" if problems else "passed")
        lost_text = ", ".join(f"{role} {n} ({n / self.epoch_every[role]:.2f} epoch)"
                              for role, n in lost.items())
        rows = [snap.greedy.count(b"\n") for snap in (before, after)]
        self.say(f"round {k}/{rounds}: {what} | frames {before.count} -> {after.count} | "
                 f"greedy rows {rows[0]} -> {rows[1]} | lost updates {lost_text} | all exited "
                 f"in {exited:.1f} s | {'; '.join(problems) if problems else 'ok'}")

    def _tally(self, fault: str, outcome: str) -> None:
        self.classes[fault]["rounds"] += 1
        self.classes[fault][outcome] += 1
        if outcome == "failed":
            self.totals["failed_rounds"] += 1

    def _exited_early(self, k: int, rounds: int, fault: str, proc: subprocess.Popen) -> None:
        self.totals["fault_rounds"] += 1
        self._tally(fault, "failed")
        self._wait_all_exit(proc, self._family(proc), time.time())
        self.say(f"round {k}/{rounds}: {fault}: master.py exited with status {proc.returncode} "
                 f"before the fault; see {self.root / f'round{k}.log'}")

    # ------------------------------------------------------------------ one round
    def round(self, k: int, rounds: int, fault: str) -> None:
        self.round_lost = 0.0
        if fault == "disk" and self.disk is None:
            self._tally(fault, "skipped")
            self.say(f"round {k}/{rounds}: disk: skipped ({self.disk_note})")
            return
        # The policy learner's first update of the round takes its live counter past both its
        # checkpoint and what state/progress.bin still holds from the last round until
        # master.py sets it from the checkpoint (after a killed learner, more than that).
        resumed_at = max(_checkpoint_updates(self.run, "policy"),
                         _live_updates(self.run, "policy"))
        resume = k > 1 or self.run.path.exists()
        started = time.time()
        log = self.root / f"round{k}.log"
        log_offset = _size(log)
        if fault == "stop":
            proc = self._start(k, resume, ("--stall-timeout", f"{self.stall_timeout:g}"))
        else:
            proc = self._start(k, resume)
        if fault == "kill":
            startup = k > 1 and self.rng.random() < self.startup_share
            moment = self._wait_for_moment(proc, started, resumed_at, startup)
        elif fault == "stop":
            moment = self._wait_for_moment(proc, started, resumed_at, False,
                                           lambda: self._all_started(started))
        elif fault == "truncate":
            moment = self._wait_for_moment(proc, started, resumed_at, False,
                                           lambda: bool(self._two_checkpoints()))
        else:
            moment = self._wait_for_moment(proc, started, resumed_at, False)
        if proc.poll() is not None:
            self._exited_early(k, rounds, fault, proc)
            return
        problems: list[str] = []
        getattr(self, f"_round_{fault}")(k, rounds, proc, started, moment, log, log_offset,
                                         problems)

    def _all_started(self, since: float) -> bool:
        """Every learner wrote a checkpoint and every evaluator its TensorBoard file after
        `since`: every child has done its first-time work (runtime.started)."""
        for role in self.epoch_every:
            if _mtime(checkpoint.pointer_file(self.run.checkpoint_dir(role))) < since:
                return False
        for out in self.run.log.glob("evaluator-*.out"):
            folder = self.run.tensorboard(out.stem)
            if not any(_mtime(f) >= since for f in folder.glob("*")):
                return False
        return True

    def _two_checkpoints(self) -> list[str]:
        """The learners with two or more complete checkpoints."""
        return [role for role in self.epoch_every
                if len(checkpoint.complete_checkpoints(str(self.run.checkpoint_dir(role)))) >= 2]

    def _round_kill(self, k, rounds, proc, started, moment, log, log_offset, problems) -> None:
        family = self._family(proc)
        victims = [(proc.pid, "master")] + self._children(proc)
        victim, victim_name = self.rng.choice(victims)
        before = Snapshot(self.run)
        family |= self._family(proc)
        kill_time = time.time()
        os.kill(victim, signal.SIGKILL)
        # Every process of the run must go: the master on its own, or its children by the
        # parent-death signal after their final checkpoints.
        orphans = self._wait_all_exit(proc, family, kill_time)
        exited = time.time() - kill_time
        if orphans:
            problems.append(f"{len(orphans)} orphan(s): {orphans}")
        after = Snapshot(self.run)
        torn, lost = self._check(before, after, self._pointer_updates(), {}, problems)
        self._report(k, rounds, "kill", f"killed {victim_name} (pid {victim}) at "
                     f"{kill_time - started:.1f} s ({moment})", before, after, lost, exited,
                     torn, orphans, problems)

    def _round_stop(self, k, rounds, proc, started, moment, log, log_offset, problems) -> None:
        family = self._family(proc)
        children = self._children(proc)
        if not children:
            problems.append("no child of master.py was found to stop")
            children = [(proc.pid, "master")]  # stop nothing useful: the round fails
        victim, victim_name = self.rng.choice(children)
        before = Snapshot(self.run)
        family |= self._family(proc)
        stop_time = time.time()
        os.kill(victim, signal.SIGSTOP)
        took = self._expect_exit(proc, family, self.stall_timeout + STALL_MARGIN, 3,
                                 "the stop", problems)
        named = f"error: {victim_name} (pid {victim}) showed no sign of life"
        if named not in _read_from(log, log_offset):
            problems.append(f"master.py's console does not say {named!r}")
        orphans = self._wait_all_exit(proc, family, time.time())
        exited = time.time() - stop_time
        if orphans:
            problems.append(f"{len(orphans)} orphan(s): {orphans}")
        after = Snapshot(self.run)
        torn, lost = self._check(before, after, self._pointer_updates(), {}, problems)
        said = f"status {proc.returncode} after {took:.1f} s" if took is not None \
            else "no exit"
        self._report(k, rounds, "stop", f"stopped {victim_name} (pid {victim}) at "
                     f"{stop_time - started:.1f} s ({moment}; {said})", before, after, lost,
                     exited, torn, orphans, problems)

    def _round_truncate(self, k, rounds, proc, started, moment, log, log_offset,
                        problems) -> None:
        family = self._family(proc)
        before = Snapshot(self.run)
        family |= self._family(proc)
        kill_time = time.time()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the master and its children, at once
        except ProcessLookupError:
            pass
        for p in family:  # any that left the process group
            if process_alive(p):
                os.kill(p, signal.SIGKILL)
        orphans = self._wait_all_exit(proc, family, kill_time)
        exited = time.time() - kill_time
        if orphans:
            problems.append(f"{len(orphans)} orphan(s): {orphans}")
        candidates = self._two_checkpoints()
        if not candidates:
            problems.append("no learner had two complete checkpoints to fall back on")
            after = Snapshot(self.run)
            torn, lost = self._check(before, after, self._pointer_updates(), {}, problems)
            self._report(k, rounds, "truncate", "killed the run, cut nothing", before, after,
                         lost, exited, torn, orphans, problems)
            return
        role = self.rng.choice(candidates)
        newest, previous = checkpoint.complete_checkpoints(
            str(self.run.checkpoint_dir(role)))[:2]
        data = sorted(Path(newest).glob(DATA_FILES))
        cut = self.rng.randrange(CUT_BYTES)
        for path in data:
            os.truncate(path, min(cut, path.stat().st_size))
        if not data:
            problems.append(f"{newest} has no data file to cut")
        counters = self._complete_counters()
        said = self._resume_and_stop(k, problems)
        where, passed = said.get(role, ("", ""))
        if where and os.path.basename(where) != os.path.basename(previous):
            problems.append(f"{role} resumed from {where}, not from {previous}")
        elif where and os.path.basename(newest) not in passed:
            problems.append(f"{role}'s log does not say it passed over {newest}")
        saved = {r: counters.get((r, os.path.basename(path)), 0)
                 for r, (path, _) in said.items()}
        after = Snapshot(self.run)
        torn, lost = self._check(before, after, saved, {role: TRUNCATED_EPOCHS}, problems)
        self._report(k, rounds, "truncate", f"killed the run at {kill_time - started:.1f} s, cut "
                     f"{role}'s {Path(newest).name} (resumed from "
                     f"{Path(where).name if where else '?'})", before, after, lost, exited,
                     torn, orphans, problems)

    def _round_disk(self, k, rounds, proc, started, moment, log, log_offset, problems) -> None:
        family = self._family(proc)
        before = Snapshot(self.run)
        family |= self._family(proc)
        fill_time = time.time()
        written = fill_disk(self.filler)
        took = self._expect_exit(proc, family, DISK_SECONDS, 2, "the disk filled", problems)
        console = _read_from(log, log_offset)
        errors = [line for line in console.splitlines() if line.startswith("error:")]
        if not (len(errors) == 1 and f"on {self.disk}" in errors[0] and "full" in errors[0]
                and errors[0].endswith(".") and ". " not in errors[0]):
            problems.append(f"master.py's console has not one error line, one sentence naming "
                            f"{self.disk}: {errors}")
        if "Traceback" in console:
            problems.append("master.py's console shows a traceback")
        orphans = self._wait_all_exit(proc, family, time.time())
        exited = time.time() - fill_time
        if orphans:
            problems.append(f"{len(orphans)} orphan(s): {orphans}")
        self.filler.unlink()
        counters = self._complete_counters()
        said = self._resume_and_stop(k, problems)
        saved = {r: counters.get((r, os.path.basename(path)), 0)
                 for r, (path, _) in said.items()}
        after = Snapshot(self.run)
        torn, lost = self._check(before, after, saved, {}, problems)
        status = f"status 2 after {took:.1f} s" if took is not None else "no exit"
        self._report(k, rounds, "disk", f"filled the disk ({written / 1e6:.0f} MB) at "
                     f"{fill_time - started:.1f} s ({status}), resumed", before, after, lost,
                     exited, torn, orphans, problems)


def run_rounds(config: Path, rounds: int, root: Path, seed: int,
               kill_after: tuple[float, float], say=None,
               max_seconds: float | None = None, startup_share: float = 0.2,
               faults: dict[str, float] | None = None, stall_timeout: float = STALL_TIMEOUT,
               tmpfs_mb: int = TMPFS_MB) -> dict:
    """The loop (module docstring); returns the summary's numbers, with `classes`: {fault
    class: its tally}. On Ctrl-C or SIGTERM the current master gets SIGTERM (a clean stop) and
    the rounds done so far are returned."""
    say = say or (lambda text: print(text, flush=True))

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, interrupt)
    loop = Loop(config, root, seed, kill_after, say, startup_share, stall_timeout, tmpfs_mb)
    plan = plan_faults(faults or {"kill": 1.0}, rounds, loop.rng)
    t0 = time.time()
    try:
        loop.setup(with_disk="disk" in plan)
        for k, fault in enumerate(plan, start=1):
            if max_seconds is not None and time.time() - t0 > max_seconds:
                say(f"--max-minutes reached: stopping after {k - 1} of {rounds} rounds")
                break
            loop.round(k, rounds, fault)
    except KeyboardInterrupt:
        for proc in loop.running:
            for pid in process_descendants(proc.pid):
                os.kill(pid, signal.SIGCONT)  # a child of a `stop` round
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        say("interrupted: the current master was stopped cleanly")
    finally:
        signal.signal(signal.SIGTERM, old_term)
        loop.teardown()
    return {**loop.totals, "classes": loop.classes}


def summary_line(totals: dict) -> str:
    return (f"fault_rounds={totals['fault_rounds']} "
            f"lost_epochs_max={totals['lost_epochs_max']:.2f} torn_rows={totals['torn_rows']} "
            f"orphans={totals['orphans']} failed_rounds={totals['failed_rounds']}")


def class_lines(totals: dict) -> list[str]:
    """One line per fault class that had rounds."""
    return [f"fault={c} rounds={t['rounds']} passed={t['passed']} failed={t['failed']} "
            f"skipped={t['skipped']} lost_epochs_max={t['lost_epochs_max']:.2f}"
            for c, t in totals.get("classes", {}).items() if t["rounds"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/fault_loop.py",
        description="Hurt a small run at a random moment (kill a process, stop one, cut its "
                    "newest checkpoint, fill its disk), resume, N times, and check that nothing "
                    "was lost or torn.")
    parser.add_argument("--config", default=str(PROJECT / "tests/configs/tiny_steve.json"),
                        help="the experiment config (default: tests/configs/tiny_steve.json)")
    parser.add_argument("--rounds", type=int, default=50, metavar="N")
    parser.add_argument("--output-root", default="/tmp/steve-fault-loop", metavar="DIR",
                        help="where the run goes (a fresh folder is best; default "
                             "/tmp/steve-fault-loop)")
    parser.add_argument("--faults", default=DEFAULT_FAULTS, metavar="CLASS=SHARE,...",
                        help=f"the fault classes' shares of the rounds, from {', '.join(FAULTS)}"
                             f" (default {DEFAULT_FAULTS})")
    parser.add_argument("--kill-after", type=float, nargs=2, default=(2.0, 20.0),
                        metavar=("MIN", "MAX"),
                        help="the fault comes uniformly between MIN and MAX seconds after the "
                             "round's first policy update (default 2 20)")
    parser.add_argument("--startup-share", type=float, default=0.2, metavar="P",
                        help="share of the kill rounds killed during start-up instead "
                             "(default 0.2)")
    parser.add_argument("--stall-timeout", type=float, default=STALL_TIMEOUT, metavar="SECONDS",
                        help=f"master.py's --stall-timeout in stop rounds (default "
                             f"{STALL_TIMEOUT:g})")
    parser.add_argument("--tmpfs-mb", type=int, default=TMPFS_MB, metavar="MB",
                        help=f"the size of the tmpfs the run lives on when disk rounds have a "
                             f"share; it must hold the replay ring (default {TMPFS_MB})")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the run and the loop's choices (classes, victim, moment)")
    parser.add_argument("--max-minutes", type=float, default=None, metavar="M",
                        help="start no round after M minutes")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    if not 0 <= args.kill_after[0] <= args.kill_after[1]:
        parser.error("--kill-after needs 0 <= MIN <= MAX")
    if not args.stall_timeout > 0:
        parser.error("--stall-timeout must be a positive number of seconds")
    try:
        faults = parse_faults(args.faults)
    except ValueError as e:
        parser.error(f"--faults: {e}")
    config = Path(args.config)
    if not config.is_file():
        parser.error(f"config file {config} does not exist")
    root = Path(args.output_root).resolve()
    if root.exists() and not root.is_dir():
        parser.error(f"--output-root {root} is a file; give a folder")
    if PROJECT in (root, *root.parents):
        parser.error(f"--output-root {root} is inside the project; give a folder outside it "
                     f"(e.g. under /tmp)")
    t0 = time.time()
    totals = run_rounds(config, args.rounds, root, args.seed, tuple(args.kill_after),
                        max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
                        startup_share=args.startup_share, faults=faults,
                        stall_timeout=args.stall_timeout, tmpfs_mb=args.tmpfs_mb)
    seconds = time.time() - t0
    for line in class_lines(totals):
        print(line, flush=True)
    print(f"{summary_line(totals)} ({seconds / 60:.1f} min, "
          f"{seconds / max(totals['fault_rounds'], 1):.0f} s per round)", flush=True)
    return 0 if totals["failed_rounds"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
