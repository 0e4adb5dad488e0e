"""Grids of runs on Ray: `python sweep.py CONFIG [CONFIG ...] --seeds N [--total-frames N]`.

Run by hand (or by `bench/`) on the machine that drives the sweep; it never trains anything
itself. Each (config, seed) pair is one run of `master.py`, started as a subprocess inside one
Ray task that reserves what the run needs:
- GPUs: 2 for a model-based config, 1 for a model-free one, 0 when the cluster has no GPU
  (master.py is always given GPU 0; Ray's CUDA_VISIBLE_DEVICES makes that the task's GPU);
- CPUs: one per process of the run (learners + interactors + evaluators), or `--cpus-per-run`;
- memory: `MEMORY_PER_PROCESS` bytes per process (TensorFlow in each), or `--memory-per-run`.
A run that no node can hold is refused before anything starts.

Without `--address`, a local Ray instance sized to this machine is started on 127.0.0.1 (and
stopped at the end); with one, the sweep joins that cluster. Every node must see this project at
the same path, with the same Python, and the output root on a shared file system.

Inside a task, a small guard process (cluster/guard.py) sits between the Ray worker and
master.py: it takes the run's lock (the one master.py takes, `state/owner.lock` in the run
folder, see rundir.RunLock, so a guard and a master started by hand never share a run), decides
from the run folder how to start, runs master.py and sends it SIGTERM when asked to stop (its
own SIGTERM, or a stop-request file the sweep writes on Ctrl-C; the task itself never blocks on
Ray, since Ray lends a blocked task's CPUs to other tasks). The guard hands its locked
descriptor to master.py (`STEVE_RUN_LOCK_FD`), which shares it with its children. If the worker
dies (its node removed, the task killed), master.py gets SIGTERM through the kernel's
parent-death signal and writes its final checkpoints; the run's lock stays held until the last
process of the attempt has exited, so a retry never overlaps the attempt before it. The driver,
the task and the guard exchange one value per attempt, a `sweep_guard.SweepJob`; the runs and
their reservations are planned by cluster/plan.py.

How a run starts (decided after taking its lock, again on every retry):
- `state/finished.json` records a budget >= --total-frames: done, nothing is started;
- a checkpoint exists (`checkpoints/<role>/latest.json`): `master.py --resume`;
- the folder exists without a checkpoint (killed early): `master.py --overwrite`;
- otherwise a new run.
A failed attempt (node lost, process killed, a child died or stalled) is retried up to
`--retries` times; a user error of master.py (exit status 2) is not. Ctrl-C stops every run
cleanly (SIGTERM to master.py, which checkpoints and exits 0); the same command later skips
finished runs and resumes the others.

Reads: the configs, and every run folder (`log/*.greedy.csv`, `replay/`, `state/`,
`checkpoints/*/latest.json`) for the status table. Writes, per run, beside the run folder:
`<output_root>/<ENV>/.sweep/<RUN>.out` (master.py's console output, appended per attempt) and,
only while a Ctrl-C stop is under way, `<RUN>.stop`; the guard creates the run's lock file
(`<RUN>/state/owner.lock`); master.py writes the rest of the run folder. At the end: the
learning curves of the sweep, `<output_root>/sweep_<EXPERIMENTS>_{frames,hours}.png`
(plot.py).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import util
from cluster.guard import (
    DONE,
    NEW,
    PROJECT_DIR,
    RESTART,
    RESUME,
    SweepJob,
    run_state,
    sweep_files,
)
from cluster.plan import (
    MEMORY_PER_PROCESS,
    RunRequest,
    RunResult,
    SweepError,
    check_fits,
    gpus_per_run,
    plan_runs,
)
from errors import UserError
from process import checkpoint  # its pointer readers import no TensorFlow
from process.roles import LEARNERS, POLICY
from process.rundir import Progress, RunDir, last_greedy_row

DEFAULT_TOTAL_FRAMES = 1_000_000  # a paper-length run (docs/platform.md: a GPU job)
STATUS_SECONDS = 5.0
DEFAULT_RETRIES = 3
LOCK_WAIT_SECONDS = 180.0  # how long a retry waits for the attempt before it to stop
CONNECT_SECONDS = 5.0
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # keeps a local Ray on 127.0.0.1

# How a run starts (see the module docstring and sweep_guard.run_state).
_ANNOUNCE = {DONE: "skipping {n} finished run(s)", RESUME: "resuming {n} unfinished run(s)",
             RESTART: "restarting {n} run(s) that have no checkpoint yet",
             NEW: "starting {n} new run(s)"}


# ------------------------------------------------------------------------------ Ray


def check_address(address: str, timeout: float = CONNECT_SECONDS) -> None:
    """Fail fast (SweepError) when nothing listens at a `host:port` Ray address."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise SweepError(f"--address {address} is not of the form HOST:PORT (for example "
                         f"10.0.0.1:6379, as `ray start --head` prints it).")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise SweepError(f"No Ray cluster answers at {address} ({e.strerror or e}); start one "
                         f"there with `ray start --head`, or leave out --address to run on "
                         f"this machine.") from None


def _is_loopback(address: str) -> bool:
    host = address.split("://", 1)[-1].rpartition(":")[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _connect(address: str | None) -> bool:
    """Initialise Ray (joining `address`, or a local instance); True if we started it.

    A local instance, or a cluster on this machine's loopback address, needs LOCAL_ENV in the
    environment before Ray is first imported; a cluster of several machines must not have it.
    """
    if address is not None:
        check_address(address)  # before importing Ray: fail in seconds, not minutes
    if address is None or _is_loopback(address):
        os.environ.update(LOCAL_ENV)
    import ray

    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="warning",
                  configure_logging=True)
    if address is None:
        try:
            ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
        except Exception as e:
            raise SweepError(f"Ray could not start on this machine ({e}); check that no "
                             f"other Ray instance holds its ports, or pass --address.") from None
        return True
    try:
        ray.init(address=address, **kwargs)
    except Exception as e:
        raise SweepError(f"Could not join the Ray cluster at {address} ({e}); check the "
                         f"address that `ray start --head` printed.") from None
    return True


def alive_nodes() -> list[dict]:
    """Resources of every live Ray node, with "id" and "ip"."""
    import ray

    return [dict(n["Resources"], id=n["NodeID"], ip=n["NodeManagerAddress"])
            for n in ray.nodes() if n.get("Alive")]


class _Board:
    """A tiny Ray actor where each task says on which node its attempt runs."""

    def __init__(self):
        self.placed: dict[str, tuple[int, str, str]] = {}

    def started(self, key: str, attempt: int, node_id: str, ip: str) -> None:
        self.placed[key] = (attempt, node_id, ip)

    def placements(self) -> dict:
        return dict(self.placed)


def _run_task(job: SweepJob, board) -> dict:
    """The Ray task of one attempt: start the guard (which runs master.py) and wait for it.

    It never blocks on another Ray object: Ray lends a blocked task's CPUs to other tasks,
    which would put two runs on one reservation. The stop request comes as a file instead.
    """
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    ip = ray.util.get_node_ip_address()
    board.started.remote(job.key, job.attempt, node_id, ip)  # not waited for
    env = dict(os.environ)
    if job.gpus == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU reservation sees no GPU
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_DIR), env.get("PYTHONPATH", "")])
    job = dataclasses.replace(job, parent=os.getpid())
    guard = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from cluster import guard; sys.exit(guard.main(sys.argv[1]))",
         job.to_json()], cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, text=True)
    while True:
        try:
            guard.wait()
            break
        except KeyboardInterrupt:  # ray.cancel: stop like Ctrl-C, and wait
            guard.send_signal(signal.SIGTERM)
    report = {}
    for line in guard.stdout.read().splitlines():
        with contextlib.suppress(ValueError):
            report = json.loads(line)
    report.update(guard=guard.returncode, node_id=node_id, ip=ip)
    return report


# ------------------------------------------------------------------------------ progress


def run_progress(run: RunDir) -> dict:
    """frames, latest greedy score and updates/frame of a run, read from its folder."""
    import replay

    frames = None
    if replay.ReplayBuffer.exists(run.replay):
        with contextlib.suppress(Exception):
            with replay.ReplayBuffer.open(run.replay) as buf:
                frames = buf.count
    if frames is None:
        counters = [checkpoint.latest_counters(run.checkpoint_dir(r)) or {} for r in LEARNERS]
        frames = max([int(c.get("frames", 0)) for c in counters] + [0])
    updates = None
    with contextlib.suppress(Exception):
        updates = Progress(run.progress_file, read_only=True).updates(POLICY)
    row = last_greedy_row(run.greedy_csv)
    return {"frames": int(frames), "score": row[3] if row else None,
            "updates_per_frame": updates / frames if updates is not None and frames else None}


def _node_label(node_id: str, ip: str) -> str:
    return f"{ip} {node_id[:6]}"


STATES = ("running", "pending", "done", "skipped", "failed", "stopped")


def status_table(requests: Sequence[RunRequest], states: dict[str, str],
                 places: dict[str, str], progress: dict[str, dict], elapsed: float,
                 retried: dict[str, int] | None = None) -> str:
    """The periodic table: a header line, then one line per run.

    `states`: one of STATES per run; `places`: the node of its latest attempt; `retried`: how
    many times it was started again after a failure (shown as "(retry N)").
    """
    counts = collections.Counter(states.values())
    head = ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s])
    rows = [("run", "state", "node", "frames", "greedy", "upd/frame")]
    for req in requests:
        p = progress.get(req.key, {})
        n = (retried or {}).get(req.key, 0)
        state = states[req.key] + (f" (retry {n})" if n > 0 else "")
        rows.append((req.key, state, places.get(req.key, "-"),
                     util.format_count(p["frames"]) if "frames" in p else "-",
                     f"{p['score']:.1f}" if p.get("score") is not None else "-",
                     f"{p['updates_per_frame']:.2f}"
                     if p.get("updates_per_frame") is not None else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"sweep {util.format_duration(elapsed)} | {head}"]
    lines += ["  " + "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
              for r in rows]
    return "\n".join(lines)


def figure_path(requests: Sequence[RunRequest]) -> Path:
    """`<output_root>/sweep_<experiments>.png` (a hash when the names are long)."""
    names = "-".join(sorted({r.experiment for r in requests}))
    if len(names) > 60:
        names = hashlib.sha1(names.encode()).hexdigest()[:10]
    return requests[0].run.path.parent.parent / f"sweep_{names}.png"


def plot_sweep(requests: Sequence[RunRequest]) -> tuple[list[str], str]:
    """Draw the sweep's learning curves; (paths written, reason when nothing was drawn)."""
    import plot

    runs = [r.run.path for r in requests if last_greedy_row(r.run.greedy_csv) is not None]
    if not runs:
        return [], "no run has an evaluation yet"
    try:
        return plot.plot_runs(plot.find_runs(runs), figure_path(requests)), ""
    except plot.PlotError as e:
        return [], str(e)


# ------------------------------------------------------------------------------ the sweep


def run_sweep(configs: Sequence[str | os.PathLike], seeds: int | Sequence[int],
              total_frames: int | None = None, output_root: str | os.PathLike | None = None,
              address: str | None = None, max_parallel: int | None = None,
              cpus_per_run: float | None = None, memory_per_run: float | None = None,
              retries: int = DEFAULT_RETRIES, status_seconds: float = STATUS_SECONDS,
              lock_wait: float = LOCK_WAIT_SECONDS, plot: bool = True,
              out: Callable[[str], None] | None = None) -> list[RunResult]:
    """Run every (config, seed) to `total_frames` frames on Ray; one RunResult per run.

    `address`: a Ray cluster to join ("HOST:PORT" or "auto"); None starts a local instance on
    127.0.0.1 sized to this machine (or uses the Ray already initialised in this process).
    `max_parallel`: at most this many runs at once (default: as many as the cluster holds).
    `cpus_per_run` / `memory_per_run` (GB): override the per-run reservations.
    `retries`: how often a failed run is started again (from its checkpoint).
    `out`: where the messages and status tables go (default: print).
    Raises SweepError (or config.ConfigError) on bad input, before writing anything. On Ctrl-C
    the runs are stopped cleanly and returned with state "stopped".
    """
    say = out or (lambda text: print(text, flush=True))
    total_frames = DEFAULT_TOTAL_FRAMES if total_frames is None else int(total_frames)
    if total_frames <= 0:
        raise SweepError(f"--total-frames {total_frames} must be a positive number of frames.")
    if max_parallel is not None and max_parallel < 1:
        raise SweepError(f"--max-parallel {max_parallel} must be 1 or more.")
    if retries < 0:
        raise SweepError(f"--retries {retries} must be 0 or more.")
    requests = plan_runs(configs, seeds, output_root, cpus_per_run, memory_per_run)
    modes = {r.key: run_state(r.run, total_frames) for r in requests}
    results = {r.key: RunResult(config=r.config, experiment=r.experiment, seed=r.seed,
                                path=r.run.root, state="pending") for r in requests}
    todo = [r for r in requests if modes[r.key] != DONE]
    for r in requests:
        if modes[r.key] == DONE:
            results[r.key].state = "skipped"
            results[r.key].__dict__.update(run_progress(r.run))
    if not todo:
        say(f"Nothing to do: all {len(requests)} run(s) already reached {total_frames} frames "
            f"(e.g. {requests[0].run.root}).")
        return [results[r.key] for r in requests]
    started_ray = _connect(address)
    try:
        return _drive(requests, todo, modes, results, total_frames, max_parallel, retries,
                      status_seconds, lock_wait, plot, say, local=address is None)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _drive(requests, todo, modes, results, total_frames, max_parallel, retries,
           status_seconds, lock_wait, plot, say, local) -> list[RunResult]:
    sweep = _Sweep(requests, todo, results, total_frames=total_frames,
                   max_parallel=max_parallel, retries=retries, status_seconds=status_seconds,
                   lock_wait=lock_wait, say=say)
    sweep.reserve(modes, local)
    sweep.run()
    return _summarize(requests, results, time.time() - sweep.t0, plot, say)


class _Sweep:
    """The runs of one sweep on Ray, from the reservations to the last outcome.

    Each run's state lives in one place, its RunResult: `state` is "pending" (queued here or
    on Ray) or "running" (its attempt has started on a node) while the sweep goes on, and
    "done", "skipped", "failed" or "stopped" at the end. The steps:
    - `reserve`: size each run's reservation to the cluster, refuse what no node holds, say
      what will happen;
    - `run`: submit runs (at most `max_parallel` at once), wait for outcomes, `settle` each
      (done, stopped, retried or failed), `show` the status table every `status_seconds`;
    - Ctrl-C only sets a flag (`_on_sigint`); the loop then calls `begin_stop`, which asks
      every running run to stop cleanly (a second Ctrl-C leaves at once).
    """

    def __init__(self, requests: Sequence[RunRequest], todo: Sequence[RunRequest],
                 results: dict[str, RunResult], *, total_frames: int, max_parallel: int | None,
                 retries: int, status_seconds: float, lock_wait: float,
                 say: Callable[[str], None]):
        self.requests = list(requests)  # every run of the sweep, in the table's order
        self.todo = list(todo)  # the runs to start (not finished before)
        self.results = results  # key -> RunResult
        self.total_frames = total_frames
        self.max_parallel = max_parallel
        self.retries = retries
        self.status_seconds = status_seconds
        self.lock_wait = lock_wait
        self.say = say
        self.pending: collections.deque[RunRequest] = collections.deque()
        self.running: dict = {}  # ObjectRef -> RunRequest
        self.placed: dict = {}  # the board's latest answer, kept for when it is slow to answer
        self.stopping = False
        self.interrupts: list[int] = []
        self.board = self.task = None
        self.t0 = time.time()

    # ------------------------------------------------------------------ reserve
    def reserve(self, modes: dict[str, str], local: bool) -> None:
        """Size the reservations to the cluster (GPUs; on a local instance at most this
        machine's CPUs), refuse a run that no node holds, and announce the plan. `modes`: how
        each run starts (DONE, RESUME, RESTART or NEW)."""
        nodes = alive_nodes()
        cluster_gpus = sum(n.get("GPU", 0) for n in nodes)
        self.todo = [dataclasses.replace(r, gpus=gpus_per_run(r.model_based, cluster_gpus))
                     for r in self.todo]
        if local:  # a local instance is this machine: a run may take all of its CPUs, no more
            most = max(n.get("CPU", 0) for n in nodes)
            if any(r.cpus > most for r in self.todo):
                self.say(f"note: this machine has {most:g} CPUs, so a run reserves at most "
                         f"{most:g} (its processes share them)")
                self.todo = [dataclasses.replace(r, cpus=min(r.cpus, most)) for r in self.todo]
        check_fits(self.todo, nodes)
        for mode in (DONE, RESUME, RESTART, NEW):
            keys = [r.key for r in self.requests if modes[r.key] == mode]
            if keys:
                self.say(f"{_ANNOUNCE[mode].format(n=len(keys))}: {', '.join(keys)}")
        r0 = self.todo[0]
        self.say(f"{len(self.todo)} run(s) to {self.total_frames} frames on {len(nodes)} "
                 f"node(s) ({sum(n.get('CPU', 0) for n in nodes):g} CPUs, {cluster_gpus:g} "
                 f"GPUs); a run reserves {r0.gpus} GPU(s), {r0.cpus:g} CPU(s), "
                 f"{r0.memory / 2**30:.1f} GB")
        self._open_board(nodes)

    def _open_board(self, nodes: list[dict]) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # The board lives on the head node: a sweep cannot outlive that one anyway.
        head = next((n["id"] for n in nodes if "node:__internal_head__" in n),
                    ray.get_runtime_context().get_node_id())
        self.board = ray.remote(num_cpus=0)(_Board).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=True)).remote()
        self.task = ray.remote(_run_task)

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        """Submit, wait and settle until no run is pending or running; show the table."""
        import ray

        for req in self.todo:  # a stop request left by an earlier, interrupted sweep
            with contextlib.suppress(FileNotFoundError):
                sweep_files(req.run)[1].unlink()
        self.pending.extend(self.todo)
        self.t0 = next_status = time.time()
        # Ctrl-C only sets a flag here, so no result is half-handled; the loop checks it every
        # second. (Only the main thread may install a handler: elsewhere Ctrl-C is not ours.)
        main_thread = threading.current_thread() is threading.main_thread()
        old_handler = signal.signal(signal.SIGINT, self._on_sigint) if main_thread else None
        try:
            while self.pending or self.running:
                if self.interrupts and not self.stopping:
                    self.begin_stop()
                while self.pending and not self.stopping and (
                        self.max_parallel is None or len(self.running) < self.max_parallel):
                    self.submit(self.pending.popleft())
                if time.time() >= next_status:
                    self.show()
                    next_status = time.time() + self.status_seconds
                ready, _ = ray.wait(list(self.running), num_returns=1,
                                    timeout=max(0.1, min(1.0, next_status - time.time())))
                for ref in ready:
                    try:
                        outcome = ray.get(ref)
                    except Exception as e:  # a lost node or worker, a cancelled task
                        outcome = e
                    self.settle(self.running.pop(ref), outcome)
        except KeyboardInterrupt:
            self.say("Second Ctrl-C: leaving now; each master.py still gets SIGTERM and stops "
                     "on its own when its Ray task ends.")
            raise
        finally:
            if main_thread:
                signal.signal(signal.SIGINT, old_handler)
        self.show()

    def submit(self, req: RunRequest) -> None:
        """Start the next attempt of a run: one Ray task holding the run's reservation."""
        res = self.results[req.key]
        res.attempts += 1
        job = SweepJob(key=req.key, attempt=res.attempts, config=req.config, seed=req.seed,
                       total_frames=self.total_frames,
                       output_root=str(req.run.path.parent.parent), run=req.run,
                       gpus=req.gpus, cpus=req.cpus, lock_wait=self.lock_wait)
        ref = self.task.options(num_cpus=req.cpus, num_gpus=req.gpus, memory=req.memory or None,
                                max_retries=0, name=f"sweep:{req.key}").remote(job, self.board)
        self.running[ref] = req
        res.state = "pending"

    def settle(self, req: RunRequest, outcome: dict | Exception) -> None:
        """What an attempt's outcome (the task's report, or the exception Ray raised for it)
        means for its run: done, stopped, queued again, or failed."""
        res = self.results[req.key]
        res.__dict__.update(run_progress(req.run))
        if isinstance(outcome, Exception):  # the task cannot say where it ran: the board can
            attempt, node_id, _ = self.placements().get(req.key, (0, "", ""))
            if attempt == res.attempts:
                res.nodes.append(node_id)
            reason = f"{type(outcome).__name__}: {str(outcome).strip().splitlines()[0]}"
            retry = True
        else:
            res.nodes.append(outcome["node_id"])
            if outcome.get("mode"):
                res.modes.append(outcome["mode"])
            rc = outcome.get("returncode")
            reason = outcome.get("message") or f"master.py exited with status {rc}"
            if outcome.get("mode") == DONE or (
                    rc == 0 and run_state(req.run, self.total_frames) == DONE):
                res.state, res.message = "done", ""
                return
            if outcome.get("stop_requested") or self.stopping:
                res.state, res.message = "stopped", reason if rc else "stopped cleanly"
                return
            retry = rc != 2  # a user error of master.py is not retried
        if retry and not self.stopping and res.attempts <= self.retries:
            if self._fits_a_live_node(req):
                self.say(f"{req.key}: attempt {res.attempts} failed ({reason}); retrying")
                self.pending.appendleft(req)
                res.state = "pending"
                return
            reason += "; no live node can hold it any more"
        res.state, res.message = ("stopped" if self.stopping else "failed"), reason
        self.say(f"{req.key}: {res.state} after {res.attempts} attempt(s): {reason}")

    @staticmethod
    def _fits_a_live_node(req: RunRequest) -> bool:
        need = (("GPU", req.gpus), ("CPU", req.cpus), ("memory", req.memory))
        return any(all(n.get(k, 0) >= v for k, v in need if v) for n in alive_nodes())

    # ------------------------------------------------------------------ show
    def placements(self) -> dict:
        """key -> (attempt, node id, ip) of each run's latest started attempt."""
        import ray

        with contextlib.suppress(Exception):
            self.placed.update(ray.get(self.board.placements.remote(), timeout=10))
        return self.placed

    def show(self) -> None:
        """The status table; a run whose latest attempt has started counts as running."""
        placed = self.placements()
        places = {key: _node_label(node_id, ip) for key, (_, node_id, ip) in placed.items()}
        for req in self.running.values():
            if placed.get(req.key, (None,))[0] == self.results[req.key].attempts:
                self.results[req.key].state = "running"
        states = {r.key: self.results[r.key].state for r in self.requests}
        progress = {r.key: run_progress(r.run) for r in self.requests if r.run.path.is_dir()}
        retried = {r.key: self.results[r.key].attempts - 1 for r in self.requests}
        self.say(status_table(self.requests, states, places, progress, time.time() - self.t0,
                              retried))

    # ------------------------------------------------------------------ stop
    def _on_sigint(self, _signum, _frame) -> None:
        self.interrupts.append(1)
        if len(self.interrupts) > 1:
            raise KeyboardInterrupt  # the second Ctrl-C leaves at once

    def begin_stop(self) -> None:
        """Drop the queued runs and ask every running one to stop cleanly."""
        import ray

        self.stopping = True
        for req in self.pending:
            res = self.results[req.key]
            res.state, res.message = "stopped", "not started"
        self.pending.clear()
        self.say(f"Ctrl-C: stopping {len(self.running)} run(s); they write final checkpoints "
                 f"(Ctrl-C again to leave without waiting).")
        for req in self.running.values():  # each guard sees its file within a second
            stop_file = sweep_files(req.run)[1]
            stop_file.parent.mkdir(parents=True, exist_ok=True)
            stop_file.touch()
        started = self.placements()
        for ref, req in self.running.items():  # queued tasks: take them off Ray's queue
            if started.get(req.key, (0,))[0] != self.results[req.key].attempts:
                ray.cancel(ref)


def _summarize(requests, results, seconds, plot, say) -> list[RunResult]:
    final = [results[r.key] for r in requests]
    counts = collections.Counter(r.state for r in final)
    retried = sum(1 for r in final if r.attempts > 1)
    parts = [f"{counts[s]} {s}" for s in ("done", "skipped", "failed", "stopped") if counts[s]]
    line = (f"sweep finished in {util.format_duration(seconds)}: {', '.join(parts)} "
            f"({retried} retried)")
    if counts["stopped"]:
        line += "; run the same command again to resume the stopped runs"
    if plot:
        written, why = plot_sweep(requests)
        line += f"; curves: {', '.join(written)}" if written else f"; no figure ({why})"
    say(line)
    return final


# ------------------------------------------------------------------------------ command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sweep.py",
        description="Run every CONFIG with seeds 0..N-1 on Ray: one master.py per run.")
    parser.add_argument("configs", nargs="+", metavar="CONFIG", help="experiment config files")
    parser.add_argument("--seeds", type=int, required=True, metavar="N",
                        help="runs per config, with seeds 0..N-1")
    parser.add_argument("--total-frames", type=int, default=None, metavar="N",
                        help=f"frame budget of every run (default {DEFAULT_TOTAL_FRAMES})")
    parser.add_argument("--output-root", default=None, metavar="DIR",
                        help="where runs go, shared by every node (default: each config's "
                             "output_root)")
    parser.add_argument("--address", default=None, metavar="ADDR",
                        help="join the Ray cluster at ADDR (HOST:PORT or auto); default: a "
                             "local Ray instance on 127.0.0.1")
    parser.add_argument("--max-parallel", type=int, default=None, metavar="K",
                        help="at most K runs at once (default: as many as fit)")
    parser.add_argument("--cpus-per-run", type=float, default=None, metavar="C",
                        help="CPUs each run reserves (default: one per process of the run)")
    parser.add_argument("--memory-per-run", type=float, default=None, metavar="GB",
                        help=f"memory each run reserves (default "
                             f"{MEMORY_PER_PROCESS / 2**30:.2f} GB per process)")
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES, metavar="R",
                        help="how often a failed run is restarted from its checkpoint")
    parser.add_argument("--status-every", type=float, default=STATUS_SECONDS, metavar="S",
                        help="seconds between status tables")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run_sweep(args.configs, args.seeds, total_frames=args.total_frames,
                            output_root=args.output_root, address=args.address,
                            max_parallel=args.max_parallel, cpus_per_run=args.cpus_per_run,
                            memory_per_run=args.memory_per_run, retries=args.retries,
                            status_seconds=args.status_every)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    states = {r.state for r in results}
    if "stopped" in states:
        return 130
    return 1 if "failed" in states else 0


if __name__ == "__main__":
    sys.exit(main())
