"""The guard of one sweep attempt, and the `SweepJob` that tells it what to run.

Runs in its own short Python process (`python -c "from cluster import guard; ..."`), started by the
Ray task of sweep.py (`sweep._run_task`) on the node that holds the attempt's reservation; it
sits between the Ray worker and master.py. It takes the run's lock (the one master.py takes,
`state/owner.lock`, see rundir.RunLock), decides from the run folder how to start (`run_state`),
runs master.py with the locked descriptor (`STEVE_RUN_LOCK_FD`) and passes a stop request on as
SIGTERM: its own SIGTERM or SIGINT, or the stop-request file `<ENV>/.sweep/<RUN>.stop` that the
sweep writes on Ctrl-C. If the Ray worker dies, the kernel sends the guard SIGTERM
(util.signal_when_parent_dies), and master.py in turn. At the end it prints one JSON line for
the task: {"mode", "returncode", "message", "stop_requested"}.

Reads: the run folder's `state/finished.json`, the checkpoints' pointer files and the stop
request. Writes: the run's lock file (`<RUN>/state/owner.lock`, with who holds it) and master.py's
console output, appended per attempt to `<ENV>/.sweep/<RUN>.out`; it deletes the stop request
once master.py has exited. master.py writes the rest of the run folder.

`SweepJob` is the one value the driver (sweep._Sweep.submit), the Ray task and the guard
exchange; it crosses into the guard's process as JSON (`to_json` / `from_json`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import util
from process import checkpoint  # its pointer files import no TensorFlow
from process.roles import LEARNERS
from process.rundir import LOCK_ENV, RunDir, RunLock, RunLocked, describe_holder

PROJECT_DIR = Path(__file__).resolve().parent.parent
MASTER = PROJECT_DIR / "master.py"
STOP_POLL_SECONDS = 0.5  # how often a guard looks for its run's stop request
SWEEP_DIR = ".sweep"

# How a run starts (see sweep.py's docstring).
DONE, RESUME, RESTART, NEW = "done", "resume", "restart", "new"
_MASTER_FLAGS = {RESUME: ["--resume"], RESTART: ["--overwrite"], NEW: []}

# Guard exit statuses beside master.py's own (0 ok, 1 a child died, 2 user error, 3 a child
# stalled; sweep.py retries all but 2).
GUARD_LOCK_TIMEOUT = 75
GUARD_STOPPED = 76


@dataclasses.dataclass(frozen=True)
class SweepJob:
    """One attempt of one run, as the driver hands it to the Ray task and the task to the
    guard."""

    key: str  # `<ENV>/<RUN>`, how the sweep names the run
    attempt: int  # 1 for the first start in this sweep, then 2, 3, ... for retries
    config: str  # absolute path of the config file
    seed: int
    total_frames: int
    output_root: str  # master.py's --output-root
    run: RunDir
    gpus: int  # the GPUs the task reserved (0: master.py sees none)
    cpus: float  # the CPUs it reserved (master.py's --cpus)
    lock_wait: float  # seconds the guard waits for the attempt before it to let the lock go
    parent: int = 0  # the pid of the Ray worker that started the guard (0: none to watch)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SweepJob:
        fields = json.loads(text)
        return cls(**dict(fields, run=RunDir(**fields["run"])))


def run_state(run: RunDir, total_frames: int) -> str:
    """DONE, RESUME, RESTART or NEW: how the run in `run` would start now."""
    finished = util.read_json(run.finished_file)
    if isinstance(finished, dict) and int(finished.get("total_frames", 0)) >= total_frames:
        return DONE
    if any(checkpoint.pointer_file(run.checkpoint_dir(role)).is_file() for role in LEARNERS):
        return RESUME
    if run.has_content():
        return RESTART
    return NEW


def sweep_files(run: RunDir) -> tuple[Path, Path]:
    """(console output, stop request) of a run: `<ENV>/.sweep/<RUN>.{out,stop}`."""
    folder = run.path.parent / SWEEP_DIR
    return folder / f"{run.name}.out", folder / f"{run.name}.stop"


def main(job_json: str) -> int:
    """Between the Ray worker and master.py: lock, decide how to start, run, forward SIGTERM.

    Prints one JSON line for the task: {"mode", "returncode", "message", "stop_requested"}.
    """
    job = SweepJob.from_json(job_json)
    util.signal_when_parent_dies()
    if job.parent and os.getppid() != job.parent:
        return GUARD_STOPPED  # the worker died before the request was in place
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # Ray blocks
    return _Guard(job).main()


def _tail_message(path: Path, offset: int) -> str:
    """The last `error:` line master.py wrote after `offset`, else its last line."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
    except FileNotFoundError:
        return ""
    lines = [ln for ln in lines if ln]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or [""])[-1]


class _Guard:
    """The guard of one attempt (see the module docstring): `take_lock`, decide how the run
    starts, `start_master`, `wait_master` while forwarding a stop request, `report`."""

    def __init__(self, job: SweepJob):
        self.job = job
        self.stop: list[int] = []  # the signals (0: the stop-request file) that asked to stop
        self.master: subprocess.Popen | None = None
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.run = job.run
        self.out_path, self.stop_path = sweep_files(self.run)
        self.lock = RunLock(self.run)

    def _on_signal(self, signum, _frame) -> None:
        self.stop.append(signum)
        if self.master is not None and self.master.poll() is None:
            self.master.send_signal(signal.SIGTERM)

    def report(self, mode: str, returncode: int | None, message: str = "") -> None:
        print(json.dumps({"mode": mode, "returncode": returncode, "message": message,
                          "stop_requested": bool(self.stop)}), flush=True)

    def main(self) -> int:
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        refused = self.take_lock()
        if refused is not None:
            return refused
        self.lock.record_holder(f"sweep.py's guard of attempt {self.job.attempt}")
        mode = run_state(self.run, self.job.total_frames)
        if mode == DONE:
            self.report(DONE, 0)
            return 0
        if self.stop:
            self.report("", None, "stopped before it started")
            return GUARD_STOPPED
        offset = self.start_master(mode)
        returncode = self.wait_master()
        with contextlib.suppress(FileNotFoundError):
            self.stop_path.unlink()
        self.report(mode, returncode,
                    _tail_message(self.out_path, offset) if returncode else "")
        return 0

    def take_lock(self) -> int | None:
        """Wait (at most `lock_wait` seconds) for the run's lock, which the attempt before may
        still hold; None once it is ours, else the guard's exit status (reported)."""
        deadline = time.time() + self.job.lock_wait
        while True:
            if self.stop_path.exists():
                self.stop.append(0)
            try:
                self.lock.acquire()
                return None
            except RunLocked:
                if self.stop:
                    self.report("", None, "stopped before it started")
                    return GUARD_STOPPED
                if time.time() > deadline:
                    self.report("", None, f"{describe_holder(self.lock.path)} still held the "
                                          f"run's lock ({self.lock.path}) after "
                                          f"{self.job.lock_wait:.0f} s")
                    return GUARD_LOCK_TIMEOUT
                time.sleep(0.5)

    def start_master(self, mode: str) -> int:
        """Start master.py with our lock, its output appended to the run's .out file; returns
        where this attempt's output begins in that file."""
        job = self.job
        argv = [sys.executable, str(MASTER), job.config, "0",
                "--total-frames", str(job.total_frames), "--output-root", job.output_root,
                "--seed", str(job.seed)] + _MASTER_FLAGS[mode]
        if job.cpus:  # the run's reservation sizes its learners' thread pools
            argv += ["--cpus", str(max(1, int(job.cpus)))]
        env = dict(os.environ, **{LOCK_ENV: str(self.lock.fd)})  # master.py takes over our lock
        with open(self.out_path, "ab") as out:
            out.write(f"\n=== attempt {job.attempt} ({mode}) on {socket.gethostname()} at "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(argv)}\n".encode())
            out.flush()
            offset = out.tell()
            self.master = subprocess.Popen(
                argv, cwd=PROJECT_DIR, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, pass_fds=(self.lock.fd,), env=env,
                preexec_fn=util.signal_when_parent_dies, start_new_session=True)
        return offset

    def wait_master(self) -> int:
        """master.py's exit status; a stop request (a signal or the file) is passed on to it as
        SIGTERM."""
        proc = self.master
        while True:
            if self.stop or self.stop_path.exists():
                if not self.stop:
                    self.stop.append(0)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)  # again is harmless: master stops once
                return proc.wait()
            try:
                return proc.wait(timeout=STOP_POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass

