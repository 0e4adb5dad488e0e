"""Starts and supervises one experiment: `python master.py CONFIG GPU [--resume]`.

The master only wires and supervises. It resolves the config and checks every input (seed,
output root, frame budget, environment, GPUs, disk) before touching the disk (preflight.prepare,
which returns the start's `Plan`). Then it takes the
run's lock (`state/owner.lock`, rundir.RunLock: one owner per run folder, held by the master and
its children until the last of them exits; a second master, `--resume` or `--overwrite` on a
live run is refused naming the holder). Under the lock it checks the run itself
(preflight.check_run): a resume of a finished run at the same or a smaller budget exits at once
touching nothing; a config that differs from `log/hps.json` is listed key by key, and one that
changes a variable's shape is refused before any process starts. Only then it writes
`log/hps.json`, creates the shared replay buffer and `state/progress.bin`, and starts with the
`spawn` method (runtime.child_main) the processes of the role table (process/roles.py), in its
order:
- the policy learner, seeing only GPU `GPU`;
- the world-model learner (model-based configs), seeing only GPU `GPU+1`;
- `agent_config.count` interactors and `evaluator_config.count` evaluators, seeing no GPU.
When CUDA_VISIBLE_DEVICES is already set (Ray, SLURM...), GPU and GPU+1 index into that list.

It then (`Supervisor`: start, watch, stop) waits on the children's sentinels (no
busy-waiting), printing a status line every few seconds (naming the phase while nothing moves:
warm-up, pretraining, compiling, waiting) and keeping the run's hours in `state/hours.json`,
so `hours` grows across resumes. If a child dies, it stops the others and exits non-zero,
quoting the end of the child's error; the others also get SIGTERM, which ends a child still in
its start-up at once. A child that shows no sign of life (runtime's heartbeats)
for `--stall-timeout` seconds (default 600; 0: never) is named with its pid, asked to stop
(SIGTERM) and killed STALL_KILL_SECONDS later if it has not; the others stop cleanly. A child
still doing its first-time work (importing TensorFlow, building, compiling, its first
checkpoint or policy) is given max(--stall-timeout, STARTUP_STALL_SECONDS). Ctrl-C or SIGTERM:
the learners write a final checkpoint, everything exits 0. With `--total-frames N`, the
interactors stop at N frames, the learners finish the updates owed for them and checkpoint, and
`state/finished.json` records the budget.
`--print-config` prints the resolved config as JSON and exits without starting anything.

A write that finds the disk full (a checkpoint, a log line, a TensorBoard summary, in a child:
runtime.DISK_FULL_EXIT, or the master's own state files) stops the run like a dead child, and
the master says so in one sentence naming the disk and the fix (`disk_full_message`). What was
published stays: checkpoints and state files are replaced whole, log lines are appended whole,
and the replay buffer's blocks were all allocated when it was created (replay.py).

Exit status: 0 done, or stopped by Ctrl-C/SIGTERM; 1 a child died; 2 a user error: refused
before anything started (errors.py), or a full disk; 3 (STALL_EXIT) a child stalled. A sweep
(sweep.py) retries every status but 2, so a stall is retried with --resume, and a full disk
waits for someone to free space (the same sweep command then resumes the run).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import multiprocessing.connection
import os
import shutil
import signal
import sys
import time

import config as config_lib
import util
from errors import UserError
from process import (
    checkpoint,  # its pointer readers import no TensorFlow
    preflight,
    runtime,
)
from process.preflight import Plan
from process.roles import (
    DEFAULT_IMPL,
    LEARNERS,
    POLICY,
    ROLE,
    TABLE,
    WORLDMODEL,
    ProcessSpec,
    frame_ratio,
    learners_behind,
)
from process.rundir import (
    LOCK_ENV,
    PHASE_STARTING,
    PHASE_UPDATING,
    PHASE_WAITING_FOR_MODEL,
    Progress,
    RunDir,
    RunLock,
    finished_record,
    last_greedy_row,
)

STATUS_SECONDS = 5.0
GRACE_SECONDS = 60.0  # how long children get to write final checkpoints before being killed
STALL_SECONDS = 600.0  # --stall-timeout's default: far above any single step of a paper run
STARTUP_STALL_SECONDS = 600.0  # the least a child doing its first-time work is given
STALL_KILL_SECONDS = 10.0  # how long a stalled child gets to exit after SIGTERM
STALL_EXIT = 3  # the exit status after a stall: not a user error, so sweeps retry it
MASTER_GAP_SECONDS = 30.0  # a wake-up this late means the master itself was stopped (Ctrl-Z)

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="master.py",
        description="Run one STEVE/MVE/DDPG experiment: learners, interactors and evaluators.",
    )
    parser.add_argument("config", help="experiment config file, e.g. "
                        "config/experiments/goodruns/hopper/steve3.json")
    parser.add_argument("gpu", type=int, help="GPU for the policy learner; the world model "
                        "uses GPU+1 (use 0 on a machine without a GPU)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run from its last checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an existing run folder of this experiment and start over")
    parser.add_argument("--total-frames", type=int, default=None, metavar="N",
                        help="stop cleanly once N environment frames were collected")
    parser.add_argument("--output-root", default=None, metavar="DIR",
                        help="where runs go (default: the config's output_root)")
    parser.add_argument("--seed", type=int, default=None, metavar="S",
                        help="seed for environments, initialisation, sampling and exploration; "
                             "the run folder gets a .seed<S> suffix")
    parser.add_argument("--cpus", type=int, default=None, metavar="N",
                        help="CPU cores this run may use, shared by its learners' TensorFlow "
                             "threads (default: the cores this process may run on)")
    parser.add_argument("--verbose", action="store_true",
                        help="keep TensorFlow's start-up lines and library warnings in each "
                             "process's log/<process>.out")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as JSON and exit")
    parser.add_argument("--stall-timeout", type=float, default=STALL_SECONDS, metavar="SECONDS",
                        help="stop the run (exit status 3) when a process shows no sign of life "
                             "for this long, naming it; 0 never does (default: %(default)g)")
    args = parser.parse_args(argv)
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite contradict each other; choose one")
    if args.total_frames is not None and args.total_frames <= 0:
        parser.error("--total-frames must be a positive number of frames")
    if args.cpus is not None and args.cpus <= 0:
        parser.error("--cpus must be a positive number of cores")
    if not args.stall_timeout >= 0:  # also refuses nan
        parser.error("--stall-timeout must be 0 (off) or a positive number of seconds")
    return args


def create_run(plan: Plan, args: argparse.Namespace) -> None:
    """Write what a new (or resumed) run needs on disk before the children start (the lock is
    held)."""
    import replay

    run, config = plan.run, plan.config
    if not args.resume and run.path.exists():
        run.clear()  # empty but for the lock file, or --overwrite
    run.make_dirs()
    for note in plan.notes:
        print(note, flush=True)
    if not args.resume:
        util.atomic_write_json(run.hps, preflight.run_hps(plan))
        env = config["env"]
        replay.ReplayBuffer.create(run.replay, env["obs_dims"], env["action_dims"],
                                   preflight.replay_capacity(config),
                                   state_dims=plan.state_dims).close()
    progress = Progress(run.progress_file, create=True)
    for role in LEARNERS:
        progress.set_phase(role, PHASE_STARTING)
    if args.resume:
        # The counters restart where the checkpoints are (updates made after the last checkpoint
        # are lost with the crash), so interactors throttle against the right numbers.
        for role in LEARNERS:
            counters = checkpoint.latest_counters(run.checkpoint_dir(role)) or {}
            progress.set_counters(role, int(counters.get("updates", 0)),
                                  int(counters.get("epoch", 0)))
    util.atomic_write_json(run.hours_file, {"hours": plan.hours_base})


# ------------------------------------------------------------------------------ supervision


def usable_cpus() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under taskset or a container's
    cpuset), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def make_specs(plan: Plan, args: argparse.Namespace,
               impl: dict | None = None) -> list[ProcessSpec]:
    """One ProcessSpec per child, in the role table's order: each learner on its GPU (`plan`'s
    devices, indexed by the role's `gpu`) with an equal share of the cores as TensorFlow
    threads, then the interactors and evaluators on the CPU with one thread each."""
    config, model_based = plan.config, plan.model_based
    cpus = getattr(args, "cpus", None) or usable_cpus()
    learner_threads = max(1, cpus // sum(row.count(config, model_based)
                                         for row in TABLE if row.learner))
    common = dict(run=plan.run, config=config, seed=plan.seed,
                  hours_base=plan.hours_base, start_time=time.time(),
                  total_frames=args.total_frames, impl=dict(impl or DEFAULT_IMPL),
                  verbose=bool(getattr(args, "verbose", False)))
    specs = []
    for row in TABLE:
        device = plan.devices[row.gpu] if row.gpu is not None else ""
        threads = learner_threads if row.learner else 1
        specs += [ProcessSpec(role=row.name, index=i, cuda_visible_devices=device,
                              threads=threads, **common)
                  for i in range(row.count(config, model_based))]
    return specs


def _error_tail(run: RunDir, name: str, lines: int = 6) -> list[str]:
    try:
        text = run.error_file(name).read_text().strip().splitlines()
    except FileNotFoundError:
        return []
    return text[-lines:]


def disk_full_message(run: RunDir, who: str, path: str) -> str:
    """The one sentence for a write (by the process `who`, of `path`, "" if unknown) that found
    the disk holding the run full."""
    mount = util.mount_point(run.path)
    try:
        free = f"{shutil.disk_usage(mount).free / 1e9:.2f} GB free"
    except OSError:
        free = "free space unknown"
    what = f"could not write {path}" if path else "could not write to the run"
    return (f"the disk holding {run.path} is full ({who} {what}; {free} on {mount}); free "
            f"space on {mount} or move the run; then --resume.")


def _disk_full_path(run: RunDir, name: str) -> str:
    """What a child that exited with runtime.DISK_FULL_EXIT could not write (the last line of
    its .err), or "" when it could not say."""
    tail = _error_tail(run, name, lines=1)
    if tail and tail[0].startswith(runtime.DISK_FULL_LINE):
        return tail[0][len(runtime.DISK_FULL_LINE):].strip()
    return ""


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class Status:
    """The master's periodic one-line summary, ending with the phase while nothing moves.
    `show_waits`: name the interactors' pause for the learners (agent_config.wait_for_learners)
    when no frame arrived since the last line."""

    def __init__(self, run: RunDir, config: dict, model_based: bool, show_waits: bool = False):
        import replay

        self.run = run
        self.config = config
        self.model_based = model_based
        self.show_waits = show_waits
        self.replay = replay.ReplayBuffer.open(self.run.replay)
        self.progress = Progress(self.run.progress_file)
        self.initial = {role: self.progress.updates(role) for role in LEARNERS}
        self.t0 = time.time()
        self.last = (self.t0, self.replay.count)

    def updates(self, role: str) -> int:
        return self.progress.updates(role)

    def phase(self, frames: int, moved: bool) -> str | None:
        """What the run is doing when it is not simply training, or None."""
        fmt = util.format_count
        warmup = preflight.warmup_frames(self.config)
        if frames < warmup:
            return f"warm-up (random actions) {fmt(frames)}/{fmt(warmup)}"
        if self.model_based:
            pretrain = int(self.config[ROLE[WORLDMODEL].config_block].get("pretrain_n") or 0)
            done = self.updates(WORLDMODEL)
            if done < pretrain:
                if self.progress.phase(WORLDMODEL) < PHASE_UPDATING:
                    return "starting the learners"
                if done == self.initial[WORLDMODEL]:
                    return "compiling the world model"
                return f"pretraining world model {fmt(done)}/{fmt(pretrain)}"
        policy_phase = self.progress.phase(POLICY)
        if policy_phase == PHASE_STARTING:
            return "starting the learners"
        if policy_phase == PHASE_WAITING_FOR_MODEL:
            return "waiting for the world model"
        updates = self.updates(POLICY)
        allowed = frame_ratio(frames, updates, self.config[ROLE[POLICY].config_block]).may_update
        if policy_phase == PHASE_UPDATING and updates == self.initial[POLICY] and allowed:
            return "compiling"
        ac = self.config["agent_config"]
        if not moved and self.show_waits and ac.get("wait_for_learners") and learners_behind(
                self.config, frames, self.updates, self.progress.waiting_for_learner,
                ac["batch_size"] * ac["count"]):
            return "waiting for learners"
        return None

    def line(self) -> str:
        now, frames = time.time(), self.replay.count
        fps = (frames - self.last[1]) / max(now - self.last[0], 1e-9)
        moved = frames != self.last[1]
        self.last = (now, frames)
        pu = self.updates(POLICY)
        parts = [f"frames {util.format_count(frames)} ({fps:.1f}/s)", f"policy updates "
                 f"{util.format_count(pu)}"]
        if self.model_based:
            parts.append(f"model updates {util.format_count(self.updates(WORLDMODEL))}")
        parts.append(f"updates/frame {pu / frames:.2f}" if frames else "updates/frame -")
        row = last_greedy_row(self.run.greedy_csv)
        parts.append(f"eval {row[3]:.1f} (epoch {row[1]})" if row else "eval -")
        parts.append(util.format_duration(now - self.t0))
        phase = self.phase(frames, moved)
        if phase:
            parts.append(phase)
        return " | ".join(parts)

    def frames(self) -> int:
        return self.replay.count


class Supervisor:
    """The children of one start of a run: `start` them, `watch` them until the last has
    exited, `stop` whatever is left, and `report` how it went (the exit status).

    While watching, the rules are: a child that dies, or exits when it should not, is a failure
    and stops the others; a child silent beyond its allowance (`_check_stalls`) stops the
    others too and is killed if it does not exit; once the frame budget is reached and every
    interactor has exited, `finish` is set (the learners do the updates they owe); once the
    learners are done, `stop` lets the evaluators go. A stop for any other reason (a failure,
    a stall, Ctrl-C or SIGTERM, a full disk) also sends every child still running SIGTERM
    (`_hurry`): a child in its start-up reads `stop` only once its start-up is over, which
    takes minutes on a loaded machine, and a SIGTERM ends it at once (runtime.holding_work).
    Children that do not stop within GRACE_SECONDS are killed.
    """

    def __init__(self, plan: Plan, args: argparse.Namespace, impl: dict | None = None,
                 lock: RunLock | None = None):
        ctx = mp.get_context("spawn")
        self.stop, self.finish = runtime.Flag(ctx), runtime.Flag(ctx)  # lock-free: see Flag
        self.plan = plan
        self.run = plan.run
        self.total_frames = args.total_frames
        self.specs = make_specs(plan, args, impl)
        held = lock.inherit() if lock is not None and lock.fd is not None else None
        self.heartbeats = runtime.Heartbeats(len(self.specs), ctx)  # slot i: child i
        self.procs = {s.name: ctx.Process(target=runtime.child_main, name=s.name,
                                          args=(s, self.stop, self.finish, held,
                                                self.heartbeats.heart(i)))
                      for i, s in enumerate(self.specs)}
        self.learners = {s.name for s in self.specs if s.row.learner}
        self.collectors = {s.name for s in self.specs if s.row.collects}
        self.status = Status(plan.run, plan.config, plan.model_based, show_waits=True)
        self.failure: tuple[str, int | None] | None = None
        self.full_path = ""  # what the master itself could not write on a full disk
        self.stall_timeout = float(getattr(args, "stall_timeout", STALL_SECONDS) or 0.0)
        self.stalled: tuple[str, int, float] | None = None  # name, pid, seconds silent
        self.stall_kill_at: float | None = None  # when the stalled child gets SIGKILL
        # The heartbeats' clock: silence counts from start() (or from the master's own
        # return after it was stopped, see _check_stalls); the last stall check.
        self.counted_from_ns = self.checked_ns = time.monotonic_ns()
        self.interrupted: list[int] = []
        self.deadline: float | None = None  # when stopping children get killed
        self.killed = False
        self.hurried = False  # whether the children were sent SIGTERM (_hurry)
        self._old_handlers: dict = {}

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        """Take over Ctrl-C and SIGTERM (they set `stop`), then start every child."""
        self._old_handlers = {s: signal.signal(s, self._on_signal)
                              for s in (signal.SIGINT, signal.SIGTERM)}
        self.counted_from_ns = self.checked_ns = time.monotonic_ns()
        for p in self.procs.values():
            p.start()
        print(f"started {', '.join(self.procs)} for {self.run.path} "
              f"({self.plan.device_note})", flush=True)

    def _on_signal(self, signum, _frame) -> None:
        if not self.interrupted:
            print(f"\n{signal.Signals(signum).name}: stopping; the learners write their final "
                  f"checkpoints.", flush=True)
        self.interrupted.append(signum)
        self.stop.set()

    # ------------------------------------------------------------------ watch
    def watch(self) -> None:
        """Wait on the children's sentinels (no busy-waiting) until every child has exited,
        applying the rules of the class docstring and printing the status line."""
        next_status = time.time() + STATUS_SECONDS
        while alive := [p for p in self.procs.values() if p.exitcode is None]:
            timeout = max(0.0, next_status - time.time())
            for at in (self.deadline if not self.killed else None, self.stall_kill_at):
                if at is not None:
                    timeout = min(timeout, max(0.0, at - time.time()))
            multiprocessing.connection.wait([p.sentinel for p in alive], timeout=timeout)
            budget_reached = (self.total_frames is not None
                              and self.status.frames() >= self.total_frames)
            self._note_failure(budget_reached)
            self._check_stalls()
            self._advance(budget_reached)
            self._hurry()
            self._kill_stalled()
            self._kill_after_grace()
            if time.time() >= next_status:
                print(self.status.line(), flush=True)
                self.record_hours()
                next_status = time.time() + STATUS_SECONDS

    def _note_failure(self, budget_reached: bool) -> None:
        """Remember the first child that exited when it should not have, and stop the rest (a
        stalled child's end is no news: the stall is the failure)."""
        for name, p in self.procs.items():
            if p.exitcode is None or self.failure is not None or (
                    self.stalled is not None and name == self.stalled[0]):
                continue
            expected = self.stop.is_set() or (p.exitcode == 0 and (
                self.finish.is_set() or (name in self.collectors and budget_reached)))
            # Ended by _hurry's SIGTERM before child_main took the signal over: nothing held.
            hurried = self.hurried and p.exitcode == -signal.SIGTERM
            if (p.exitcode != 0 and not hurried) or not expected:
                self.failure = (name, p.exitcode)
                self.stop.set()

    def _check_stalls(self) -> None:
        """While the run goes on: name the child silent longest beyond its allowance (no beat
        for stall_timeout seconds; max(stall_timeout, STARTUP_STALL_SECONDS) before it has
        `started`, see runtime.Heartbeats), stop the others and ask it to stop (SIGTERM).
        Silence counts from the master's own last wake-up when that was over
        MASTER_GAP_SECONDS ago: then the master was stopped too (Ctrl-Z stops the whole process
        group, or the machine was paused), and every child gets a fresh allowance."""
        if not self.stall_timeout or self.stop.is_set() or self.stalled is not None:
            return
        now = time.monotonic_ns()
        if now - self.checked_ns > MASTER_GAP_SECONDS * 1e9:
            self.counted_from_ns = now
        self.checked_ns = now
        silent = []
        for slot, (name, p) in enumerate(self.procs.items()):
            if p.exitcode is not None:
                continue
            last, started = self.heartbeats.last(slot)
            quiet = (now - max(last, self.counted_from_ns)) / 1e9
            allowed = self.stall_timeout if started else max(self.stall_timeout,
                                                             STARTUP_STALL_SECONDS)
            if quiet > allowed:
                silent.append((quiet, name))
        if not silent:
            return
        quiet, name = max(silent)
        p = self.procs[name]
        self.stalled = (name, p.pid, quiet)
        print(f"{name} (pid {p.pid}) showed no sign of life for {quiet:.0f} s; stopping the "
              f"run", file=sys.stderr, flush=True)
        self.stop.set()
        p.terminate()  # SIGTERM: a child that still runs Python writes its checkpoint and exits
        self.stall_kill_at = time.time() + STALL_KILL_SECONDS

    def _hurry(self) -> None:
        """Once `stop` is set by anything but the budget's end, send SIGTERM once to every
        child still running: one in its start-up exits at once (it holds nothing), one past
        it only sets `stop` (runtime.child_main's handler), as the master already has."""
        if self.hurried or not self.stop.is_set() or self.finish.is_set():
            return
        self.hurried = True
        for p in self.procs.values():
            if p.exitcode is None:
                p.terminate()

    def _kill_stalled(self) -> None:
        """Kill the stalled child if it has not exited STALL_KILL_SECONDS after its SIGTERM."""
        if self.stall_kill_at is None or time.time() < self.stall_kill_at:
            return
        self.stall_kill_at = None
        p = self.procs[self.stalled[0]]
        if p.exitcode is None:
            p.kill()

    def _advance(self, budget_reached: bool) -> None:
        """Budget reached -> `finish` -> learners done -> `stop`."""
        if budget_reached and not self.finish.is_set() and all(
                self.procs[n].exitcode == 0 for n in self.collectors):
            self.finish.set()  # no frame arrives any more: learners do what they owe
        if self.finish.is_set() and not self.stop.is_set() and all(
                self.procs[n].exitcode is not None for n in self.learners):
            self.stop.set()  # budget reached and learners done: let evaluators go

    def _kill_after_grace(self) -> None:
        """Once `stop` is set, give the children GRACE_SECONDS, then kill those still alive."""
        if self.stop.is_set() and self.deadline is None:
            self.deadline = time.time() + GRACE_SECONDS
        if self.killed or self.deadline is None or time.time() < self.deadline:
            return
        for p in self.procs.values():
            if p.exitcode is None:
                print(f"{p.name} did not stop within {GRACE_SECONDS:.0f} s; killing it",
                      file=sys.stderr)
                p.kill()
        self.killed = True

    # ------------------------------------------------------------------ stop
    def stop_all(self) -> None:
        """Kill what still runs (after an error in the master), reap every child, give the
        signals back and record the run's hours."""
        for p in self.procs.values():
            if p.exitcode is None and p.pid is not None:
                p.kill()
            if p.pid is not None:
                p.join(timeout=5)
        for s, handler in self._old_handlers.items():
            signal.signal(s, handler)
        self.record_hours()

    def record_hours(self) -> None:
        try:
            util.atomic_write_json(self.run.hours_file, {"hours": self.specs[0].hours()})
        except OSError as e:
            if util.disk_full(e) is None:
                raise
            self._on_disk_full(str(self.run.hours_file))

    def _on_disk_full(self, path: str) -> None:
        """A write of the master's found the disk full: a failure like a child's, and stop."""
        if self.failure is None:
            self.failure = ("master.py", runtime.DISK_FULL_EXIT)
            self.full_path = path
        self.stop.set()

    def report(self) -> int:
        """The last status line, then the failure or the budget reached; the exit status."""
        print(self.status.line(), flush=True)
        if self.stalled is not None:  # it set `stop`: any failure after it followed from it
            name, pid, quiet = self.stalled
            print(f"error: {name} (pid {pid}) showed no sign of life for {quiet:.0f} s "
                  f"(--stall-timeout {self.stall_timeout:g}): stopped, or stuck in a call that "
                  f"never returns (a hung GPU call, a dead network mount); it was ended and "
                  f"the other processes were stopped. Look at log/{name}.out, fix the cause, "
                  f"then continue with --resume.", file=sys.stderr)
            return STALL_EXIT
        if self.failure is not None and self.failure[1] == runtime.DISK_FULL_EXIT:
            name = self.failure[0]
            path = self.full_path if name == "master.py" else _disk_full_path(self.run, name)
            print(f"error: {disk_full_message(self.run, name, path)}", file=sys.stderr)
            return 2  # not retried by a sweep: someone has to free space first
        if self.failure is not None:
            name, code = self.failure
            tail = _error_tail(self.run, name)
            for line in tail[:-1]:
                print(f"  {line}", file=sys.stderr)
            last = tail[-1].strip() if tail else "no error message was written"
            print(f"error: {name} {_describe_exit(code)} ({last}); the other processes were "
                  f"stopped. Fix the cause, then continue with --resume.", file=sys.stderr)
            return 1
        if self.finish.is_set() and self.total_frames is not None:
            try:
                util.atomic_write_json(self.run.finished_file, finished_record(
                    self.total_frames, self.status.frames(),
                    {role: self.status.updates(role) for role in LEARNERS}))
            except OSError as e:
                if util.disk_full(e) is None:
                    raise
                where = str(self.run.finished_file)  # the run is done; only its record is missing
                print(f"error: {disk_full_message(self.run, 'master.py', where)}", file=sys.stderr)
                return 2
            print(f"reached {self.total_frames} frames; run saved in {self.run.path}")
        return 0


def supervise(plan: Plan, args: argparse.Namespace, impl: dict | None = None,
              lock: RunLock | None = None) -> int:
    """Start every child, watch them, stop them; the return value is the exit status. Each
    child gets a descriptor of the run's `lock` and holds it until it exits."""
    supervisor = Supervisor(plan, args, impl, lock)
    try:
        supervisor.start()
        supervisor.watch()
    finally:
        supervisor.stop_all()
    return supervisor.report()


def _inherited_lock_fd() -> int | None:
    """A descriptor already holding the run's lock, handed down by a sweep guard."""
    value = os.environ.pop(LOCK_ENV, "")
    return int(value) if value.isdigit() else None


def take_lock(run: RunDir) -> RunLock:
    """The run's lock, or UserError naming its holder (rundir.RunLock)."""
    lock = RunLock(run)
    try:
        lock.acquire(_inherited_lock_fd())
    except OSError as e:
        raise UserError(f"Could not create the run's lock file {lock.path} ({e.strerror}); "
                        f"check that {run.path.parent} is writable or choose another "
                        f"--output-root.") from None
    return lock


def main(argv: list[str] | None = None, impl: dict | None = None) -> int:
    args = parse_args(argv)
    lock = None
    plan: Plan | None = None
    started = False
    try:
        if args.print_config:
            json.dump(config_lib.load_config(args.config), sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        plan = preflight.prepare(args)
        if not plan.run.lock_file.exists():
            # A preview: no lock file, so no live owner, and a refusal (or a finished run) now
            # leaves the folder as it was (taking the lock would create state/owner.lock). The
            # check that counts is the one under the lock below.
            preview = preflight.check_run(plan, args, impl, compare_shapes=False)
            if preview.finished is not None:
                print(preview.finished, flush=True)
                return 0
        lock = take_lock(plan.run)
        check = preflight.check_run(plan, args, impl)
        if check.finished is not None:
            print(check.finished, flush=True)
            lock.release(discard=True)
            return 0
        plan = plan.with_check(check)
        lock.record_holder(" ".join(["master.py", *(sys.argv[1:] if argv is None else argv)]))
        started = True
        create_run(plan, args)
    except Exception as e:  # user errors are one sentence; anything else is a real bug
        if lock is not None:
            lock.release(discard=not started)  # a refused start leaves no lock file behind
        full = util.disk_full(e) if plan is not None else None
        if not isinstance(e, UserError) and full is None:
            raise
        message = e if isinstance(e, UserError) else disk_full_message(plan.run, "master.py",
                                                                       full)
        print(f"error: {message}", file=sys.stderr)
        return 2
    try:
        return supervise(plan, args, impl, lock)
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
