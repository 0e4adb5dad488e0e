"""Starts and supervises one experiment: `python master.py CONFIG GPU [--resume]`.

The master only wires and supervises. It resolves the config, checks the run folder, the
environment, the GPUs and the disk, writes `log/hps.json`, creates the shared replay buffer and
`state/progress.bin`, then starts with the `spawn` method (runtime.child_main):
- the policy learner, seeing only GPU `GPU`;
- the world-model learner (model-based configs), seeing only GPU `GPU+1`;
- `agent_config.count` interactors and `evaluator_config.count` evaluators, seeing no GPU.
When CUDA_VISIBLE_DEVICES is already set (Ray, SLURM...), GPU and GPU+1 index into that list.

It then waits on the children's sentinels (no busy-waiting), printing a status line every few
seconds. If a child dies, it stops the others and exits non-zero, quoting the end of the child's
error. Ctrl-C or SIGTERM: the learners write a final checkpoint, everything exits 0. With
`--total-frames N`, the interactors stop at N frames, the learners finish the updates owed for
them and checkpoint, and `state/finished.json` records the budget.
`--print-config` prints the resolved config as JSON and exits without starting anything.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import multiprocessing.connection
import os
import shutil
import signal
import subprocess
import sys
import time

import config as config_lib
import util
from rundir import ROLES, Progress, RunDir, last_greedy_row

STATUS_SECONDS = 5.0
GRACE_SECONDS = 60.0  # how long children get to write final checkpoints before being killed


class UserError(Exception):
    """A problem with the command line or the run folder; the message is one sentence."""


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
    args = parser.parse_args(argv)
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite contradict each other; choose one")
    if args.total_frames is not None and args.total_frames <= 0:
        parser.error("--total-frames must be a positive number of frames")
    if args.cpus is not None and args.cpus <= 0:
        parser.error("--cpus must be a positive number of cores")
    return args


# ------------------------------------------------------------------------------ devices


def visible_gpus() -> list[str]:
    """The GPUs this process may use: the CUDA_VISIBLE_DEVICES list if set, else nvidia-smi's."""
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    if preset is not None:
        return [d.strip() for d in preset.split(",") if d.strip() and d.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (FileNotFoundError, subprocess.TimeoutExpired, OSError):
        return []
    if out.returncode != 0:
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def assign_devices(gpu: int, model_based: bool, gpus: list[str]) -> tuple[str, str, str]:
    """CUDA_VISIBLE_DEVICES values for (policy learner, world-model learner, note)."""
    if gpu < 0:
        raise UserError(f"GPU {gpu} is not a GPU id; give 0 or more (0 also runs on a machine "
                        f"without a GPU).")
    if not gpus:
        if gpu != 0:
            raise UserError(f"GPU {gpu} was asked for, but this machine shows no GPU; use 0 to "
                            f"run everything on the CPU.")
        return "", "", "no GPU visible: every process runs on the CPU"
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    listing = (f"CUDA_VISIBLE_DEVICES={preset} gives {len(gpus)}" if preset is not None
               else f"this machine has {len(gpus)}")
    if gpu >= len(gpus):
        raise UserError(f"GPU {gpu} does not exist: {listing} GPU(s), numbered 0 to "
                        f"{len(gpus) - 1}; pick one of those.")
    policy = gpus[gpu]
    if not model_based:
        return policy, "", f"policy learner on GPU {policy}"
    if gpu + 1 < len(gpus):
        return policy, gpus[gpu + 1], f"policy learner on GPU {policy}, world model on GPU " \
                                      f"{gpus[gpu + 1]}"
    return policy, policy, (f"policy learner on GPU {policy}; there is no GPU {gpu + 1}, so the "
                            f"world model shares GPU {policy}")


# ------------------------------------------------------------------------------ the plan


def _has_run(run: RunDir) -> bool:
    return run.path.exists() and any(run.path.iterdir())


def _latest_counters(run: RunDir, role: str) -> dict | None:
    """The counters of a role's newest checkpoint, from its pointer file (no TensorFlow here)."""
    pointer = util.read_json(run.checkpoint_dir(role) / "latest.json")
    if not isinstance(pointer, dict) or "counters" not in pointer:
        return None
    if not (run.checkpoint_dir(role) / str(pointer.get("checkpoint", ""))).is_dir():
        return None
    return dict(pointer["counters"])


def _replay_capacity(config: dict) -> int:
    sizes = [config["policy_config"]["replay_size"]]
    if config_lib.is_model_based(config):
        sizes.append(config["model_config"]["replay_size"])
    return max(sizes)


def _check_disk(run: RunDir, config: dict) -> None:
    import replay

    env = config["env"]
    need = replay.required_bytes(env["obs_dims"], env["action_dims"], _replay_capacity(config))
    probe = run.path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise UserError(f"The replay buffer needs {need / 1e9:.1f} GB but {probe} has only "
                        f"{free / 1e9:.1f} GB free; lower replay_size or choose another "
                        f"--output-root.")


def _check_env(config: dict) -> None:
    import envwrap

    env = envwrap.make_env(config["env"])
    env.close()


def prepare(args: argparse.Namespace) -> dict:
    """Every check that can fail on user input, before anything is written."""
    config = config_lib.load_config(args.config)
    seed = args.seed if args.seed is not None else config.get("seed")
    experiment = config_lib.experiment_name(args.config)
    run = RunDir.for_config(config, experiment, seed, args.output_root)
    model_based = config_lib.is_model_based(config)
    policy_dev, model_dev, device_note = assign_devices(args.gpu, model_based, visible_gpus())
    hours_base = 0.0
    if args.resume:
        if not _has_run(run):
            raise UserError(f"There is no run to resume in {run.path}; start it without "
                            f"--resume.")
        counters = {role: _latest_counters(run, role) for role in ROLES}
        if not any(counters.values()):
            raise UserError(f"The run in {run.path} has no checkpoint yet, so there is nothing "
                            f"to resume; start it again with --overwrite.")
        import replay

        if not replay.ReplayBuffer.exists(run.replay):
            raise UserError(f"The run in {run.path} has checkpoints but no replay buffer "
                            f"(replay/ is missing); restore that folder or start with "
                            f"--overwrite.")
        env = config["env"]
        replay.ReplayBuffer.open(run.replay, obs_dims=env["obs_dims"],
                                 action_dims=env["action_dims"],
                                 capacity=_replay_capacity(config)).close()  # sizes must match
        hours_base = max(float((c or {}).get("hours", 0.0)) for c in counters.values())
    elif _has_run(run) and not args.overwrite:
        raise UserError(f"{run.path} already holds a run; pass --resume to continue it, "
                        f"--overwrite to delete it and start over, or choose another --seed or "
                        f"--output-root.")
    _check_env(config)
    import replay

    if config["agent_config"]["batch_size"] > replay.DEFAULT_MAX_APPEND:
        raise UserError(f"agent_config.batch_size is {config['agent_config']['batch_size']}, but "
                        f"an interactor steps at most {replay.DEFAULT_MAX_APPEND} environments; "
                        f"use more interactors (agent_config.count) instead.")
    if not args.resume:
        _check_disk(run, config)
    return {"config": config, "run": run, "seed": 0 if seed is None else int(seed),
            "experiment": experiment, "devices": (policy_dev, model_dev),
            "device_note": device_note, "hours_base": hours_base, "model_based": model_based}


def create_run(plan: dict, args: argparse.Namespace) -> None:
    """Write what a new (or resumed) run needs on disk before the children start."""
    import replay

    run: RunDir = plan["run"]
    config = plan["config"]
    if not args.resume and run.path.exists():
        shutil.rmtree(run.path)  # only reached with --overwrite
    run.make_dirs()
    hps = dict(config, name=run.name, seed=plan["seed"])
    if args.resume:
        previous = util.read_json(run.hps)
        if previous is not None and previous != hps:
            print(f"note: {args.config} resolves differently from the run's log/hps.json; "
                  f"resuming with the config as it is now (hps.json is kept as it was).")
    else:
        util.atomic_write_json(run.hps, hps)
        env = config["env"]
        replay.ReplayBuffer.create(run.replay, env["obs_dims"], env["action_dims"],
                                   _replay_capacity(config)).close()
    progress = Progress(run.progress_file, create=True)
    if args.resume:
        # The counters restart where the checkpoints are (updates made after the last checkpoint
        # are lost with the crash), so interactors throttle against the right numbers.
        for role in ROLES:
            counters = _latest_counters(run, role) or {}
            progress.set(f"{role}_updates", int(counters.get("updates", 0)))
            progress.set(f"{role}_epoch", int(counters.get("epoch", 0)))


# ------------------------------------------------------------------------------ supervision


def usable_cpus() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under taskset or a container's
    cpuset), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def make_specs(plan: dict, args: argparse.Namespace, impl: dict | None = None) -> list:
    from runtime import DEFAULT_IMPL, ProcessSpec

    config = plan["config"]
    cpus = getattr(args, "cpus", None) or usable_cpus()
    learners = 2 if plan["model_based"] else 1
    common = dict(run=plan["run"], config=config, seed=plan["seed"],
                  hours_base=plan["hours_base"], start_time=time.time(),
                  total_frames=args.total_frames, impl=dict(impl or DEFAULT_IMPL),
                  verbose=bool(getattr(args, "verbose", False)))
    policy_dev, model_dev = plan["devices"]
    learner_threads = max(1, cpus // learners)
    specs = [ProcessSpec(role="policy", index=0, cuda_visible_devices=policy_dev,
                         threads=learner_threads, **common)]
    if plan["model_based"]:
        specs.append(ProcessSpec(role="worldmodel", index=0, cuda_visible_devices=model_dev,
                                 threads=learner_threads, **common))
    specs += [ProcessSpec(role="interactor", index=i, cuda_visible_devices="", threads=1,
                          **common) for i in range(config["agent_config"]["count"])]
    specs += [ProcessSpec(role="evaluator", index=i, cuda_visible_devices="", threads=1,
                          **common) for i in range(config["evaluator_config"]["count"])]
    return specs


def _error_tail(run: RunDir, name: str, lines: int = 6) -> list[str]:
    try:
        text = run.error_file(name).read_text().strip().splitlines()
    except FileNotFoundError:
        return []
    return text[-lines:]


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
    """The master's periodic one-line summary."""

    def __init__(self, plan: dict):
        import replay

        self.run: RunDir = plan["run"]
        self.model_based = plan["model_based"]
        self.replay = replay.ReplayBuffer.open(self.run.replay)
        self.progress = Progress(self.run.progress_file)
        self.t0 = time.time()
        self.last = (self.t0, self.replay.count)

    def line(self) -> str:
        now, frames = time.time(), self.replay.count
        fps = (frames - self.last[1]) / max(now - self.last[0], 1e-9)
        self.last = (now, frames)
        pu = self.progress.get("policy_updates")
        parts = [f"frames {util.format_count(frames)} ({fps:.1f}/s)", f"policy updates "
                 f"{util.format_count(pu)}"]
        if self.model_based:
            parts.append(f"model updates "
                         f"{util.format_count(self.progress.get('worldmodel_updates'))}")
        parts.append(f"updates/frame {pu / frames:.2f}" if frames else "updates/frame -")
        row = last_greedy_row(self.run.greedy_csv)
        parts.append(f"eval {row[3]:.1f} (epoch {row[1]})" if row else "eval -")
        parts.append(util.format_duration(now - self.t0))
        return " | ".join(parts)

    def frames(self) -> int:
        return self.replay.count


def supervise(plan: dict, args: argparse.Namespace, impl: dict | None = None) -> int:
    """Start every child, watch them, stop them; the return value is the exit status."""
    import runtime

    ctx = mp.get_context("spawn")
    stop, finish = runtime.Flag(ctx), runtime.Flag(ctx)  # lock-free: see runtime.Flag
    specs = make_specs(plan, args, impl)
    procs = {s.name: ctx.Process(target=runtime.child_main, args=(s, stop, finish), name=s.name)
             for s in specs}
    learners = {s.name for s in specs if s.role in ROLES}
    interactors = {s.name for s in specs if s.role == "interactor"}
    interrupted = []

    def on_signal(signum, _frame):
        if not interrupted:
            print(f"\n{signal.Signals(signum).name}: stopping; the learners write their final "
                  f"checkpoints.", flush=True)
        interrupted.append(signum)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    run: RunDir = plan["run"]
    status = Status(plan)
    failure: tuple[str, int | None] | None = None
    try:
        for p in procs.values():
            p.start()
        print(f"started {', '.join(procs)} for {run.path} ({plan['device_note']})", flush=True)
        next_status = time.time() + STATUS_SECONDS
        deadline = None
        while True:
            alive = [p for p in procs.values() if p.exitcode is None]
            if not alive:
                break
            timeout = max(0.0, next_status - time.time())
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - time.time()))
            multiprocessing.connection.wait([p.sentinel for p in alive], timeout=timeout)
            budget_reached = (args.total_frames is not None
                              and status.frames() >= args.total_frames)
            for name, p in procs.items():
                if p.exitcode is None or failure is not None:
                    continue
                expected = stop.is_set() or (p.exitcode == 0 and (
                    finish.is_set() or (name in interactors and budget_reached)))
                if p.exitcode != 0 or not expected:
                    failure = (name, p.exitcode)
                    stop.set()
            if budget_reached and not finish.is_set() and all(
                    procs[n].exitcode == 0 for n in interactors):
                finish.set()  # no frame arrives any more: learners do what they owe
            if finish.is_set() and not stop.is_set() and all(
                    procs[n].exitcode is not None for n in learners):
                stop.set()  # budget reached and learners done: let evaluators go
            if stop.is_set() and deadline is None:
                deadline = time.time() + GRACE_SECONDS
            if deadline is not None and time.time() >= deadline:
                for p in procs.values():
                    if p.exitcode is None:
                        print(f"{p.name} did not stop within {GRACE_SECONDS:.0f} s; killing it",
                              file=sys.stderr)
                        p.kill()
                deadline = float("inf")
            if time.time() >= next_status:
                print(status.line(), flush=True)
                next_status = time.time() + STATUS_SECONDS
    finally:
        for p in procs.values():
            if p.exitcode is None:
                p.kill()
            p.join(timeout=5)
        for s, handler in old.items():
            signal.signal(s, handler)
    print(status.line(), flush=True)
    if failure is not None:
        name, code = failure
        tail = _error_tail(run, name)
        for line in tail[:-1]:
            print(f"  {line}", file=sys.stderr)
        last = tail[-1].strip() if tail else "no error message was written"
        print(f"error: {name} {_describe_exit(code)} ({last}); the other processes were "
              f"stopped. Fix the cause, then continue with --resume.", file=sys.stderr)
        return 1
    if finish.is_set() and args.total_frames is not None:
        util.atomic_write_json(run.finished_file, {
            "total_frames": args.total_frames, "frames": status.frames(),
            "policy_updates": status.progress.get("policy_updates"),
            "worldmodel_updates": status.progress.get("worldmodel_updates")})
        print(f"reached {args.total_frames} frames; run saved in {run.path}")
    return 0


def main(argv: list[str] | None = None, impl: dict | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.print_config:
            json.dump(config_lib.load_config(args.config), sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        plan = prepare(args)
        create_run(plan, args)
    except Exception as e:  # user errors are one sentence; anything else is a real bug
        if not _is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return supervise(plan, args, impl)


def _is_user_error(e: Exception) -> bool:
    names = {"ConfigError", "UserError", "EnvError", "ReplayError", "CheckpointError"}
    return type(e).__name__ in names


if __name__ == "__main__":
    sys.exit(main())
