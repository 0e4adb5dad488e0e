"""The master's pre-flight check: every check of a start, before the master writes anything.

Runs in the master process (master.py). `prepare` checks the user's input (config, seed, output
root, frame budget, GPUs, environment, disk) and returns the `Plan` of the start, touching
nothing; `check_run` then checks the run folder itself (a resume of a finished run, a missing
checkpoint or replay buffer, a config that differs from the run's `log/hps.json` and whether it
changes a variable's shape) and returns a `RunCheck`. Reads: the config files, the run's
`log/hps.json`, `log/<EXPERIMENT>.greedy.csv`, `state/finished.json`, `state/hours.json`, the
replay buffer's header and the checkpoints' pointer files (checkpoint.latest_counters: no
TensorFlow); a changed config's variable shapes are compared in a short-lived spawned process
(runtime.check_shapes_main), which writes only into a scratch folder. Writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import config as config_lib
import util
from errors import UserError
from process import (
    checkpoint,  # its pointer readers import no TensorFlow
    runtime,
)
from process.devices import assign_devices, visible_gpus
from process.roles import DEFAULT_IMPL, LEARNERS, POLICY, ProcessSpec, learners
from process.rundir import RunDir

SEED_LIMIT = 2**32  # numpy's seeds: 0 <= seed < 2^32
SHAPE_CHECK_SECONDS = 300.0  # how long the variable-shape check of a changed config may take


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one start of a run is: the resolved config, the run folder and how the processes
    are placed. Built once by `prepare`; `with_check` gives the copy a `RunCheck` completes."""

    config: dict  # the resolved config (config.load_config), never changed
    run: RunDir
    seed: int  # 0 when neither --seed nor the config gives one
    experiment: str  # the config file's name
    devices: tuple[str, str]  # CUDA_VISIBLE_DEVICES of the policy and world-model learners
    device_note: str  # how the GPUs were assigned, for the start line
    model_based: bool
    state_dims: int = 0  # the simulator state stored with every frame (envwrap.Env.state_dims)
    hours_base: float = 0.0  # the run's hours before this start (a resume's, from check_run)
    notes: tuple[str, ...] = ()  # lines printed before the run starts (from check_run)

    def with_check(self, check: RunCheck) -> Plan:
        return dataclasses.replace(self, hours_base=check.hours_base, notes=check.notes)


@dataclasses.dataclass(frozen=True)
class RunCheck:
    """What `check_run` found in the run folder."""

    finished: str | None = None  # a run that already reached its budget: the message to print
    hours_base: float = 0.0
    notes: tuple[str, ...] = ()


def _latest_counters(run: RunDir, role: str) -> dict | None:
    """The counters of a role's newest checkpoint, from its pointer file (no TensorFlow here)."""
    return checkpoint.latest_counters(run.checkpoint_dir(role))


def replay_capacity(config: dict) -> int:
    return max(config[row.config_block]["replay_size"] for row in learners(config))


def warmup_frames(config: dict) -> int:
    """The frames collected before any learner learns (random actions until then)."""
    return max(config[row.config_block]["frames_before_learning"] for row in learners(config))


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_disk(run: RunDir, config: dict, state_dims: int) -> None:
    import replay

    env = config["env"]
    need = replay.required_bytes(env["obs_dims"], env["action_dims"],
                                 replay_capacity(config), state_dims=state_dims)
    probe = _existing_ancestor(run.path)
    free = shutil.disk_usage(probe).free
    if need > free:
        raise UserError(f"The replay buffer needs {need / 1e9:.1f} GB but {probe} has only "
                        f"{free / 1e9:.1f} GB free; lower replay_size or choose another "
                        f"--output-root.")


def _check_env(config: dict) -> int:
    """Build the env once (refusing unknown ids and wrong sizes) and, with
    `value_expansion.oracle`, its oracle; returns the env's `state_dims`."""
    import envwrap

    env = envwrap.make_env(config["env"])
    try:
        if config_lib.uses_oracle(config):
            from learning import oracle as mujoco_oracle

            mujoco_oracle.check_supported(env)
        return env.state_dims
    finally:
        env.close()


def _check_seed(seed, source: str) -> None:
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise UserError(f"{source} {seed} is not a seed; give a whole number from 0 to "
                        f"{SEED_LIMIT - 1}.")


def _check_output_root(run: RunDir, base: str, given: bool) -> None:
    """The output root must be a folder (or creatable) we may write in."""
    label = f"--output-root {base}" if given else f"the config's output_root {base}"
    if Path(base).exists() and not Path(base).is_dir():
        raise UserError(f"{label} is a file, not a folder; give a folder (it is created if "
                        f"missing).")
    probe = _existing_ancestor(run.path)
    if not probe.is_dir():
        raise UserError(f"{probe} is a file where the run's folder {run.path} would go; move it "
                        f"or choose another --output-root.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{probe} is not writable (a read-only file system or no permission), "
                        f"so nothing can be saved under {label}; choose another "
                        f"--output-root.")


def _check_total_frames(config: dict, total: int | None) -> None:
    if total is None:
        return
    warmup = warmup_frames(config)
    if total <= warmup:
        raise UserError(f"--total-frames {total} ends the run before learning starts "
                        f"(frames_before_learning is {warmup}), so no learner would ever "
                        f"update; give more than {warmup} frames.")


def prepare(args: argparse.Namespace) -> Plan:
    """Every check of the user's input, before anything is written or locked."""
    config = config_lib.load_config(args.config)
    _check_seed(args.seed, "--seed")
    _check_seed(config.get("seed"), "The config's seed")
    seed = args.seed if args.seed is not None else config.get("seed")
    experiment = config_lib.experiment_name(args.config)
    run = RunDir.for_config(config, experiment, seed, args.output_root)
    base = args.output_root if args.output_root is not None else config["output_root"]
    _check_output_root(run, str(base), args.output_root is not None)
    _check_total_frames(config, args.total_frames)
    model_based = config_lib.is_model_based(config)
    policy_dev, model_dev, device_note = assign_devices(args.gpu, model_based, visible_gpus())
    state_dims = _check_env(config)
    import replay

    if config["agent_config"]["batch_size"] > replay.DEFAULT_MAX_APPEND:
        raise UserError(f"agent_config.batch_size is {config['agent_config']['batch_size']}, but "
                        f"an interactor steps at most {replay.DEFAULT_MAX_APPEND} environments; "
                        f"use more interactors (agent_config.count) instead.")
    if not args.resume:
        _check_disk(run, config, state_dims)
    return Plan(config=config, run=run, seed=0 if seed is None else int(seed),
                experiment=experiment, devices=(policy_dev, model_dev), device_note=device_note,
                model_based=model_based, state_dims=state_dims)


def run_hps(plan: Plan) -> dict:
    return dict(plan.config, name=plan.run.name, seed=plan.seed)


_ABSENT = object()


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key.sub old -> new' for every leaf where two resolved configs differ."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            show = [("(absent)" if v is _ABSENT else json.dumps(v)) for v in (a, b)]
            out.append(f"{prefix}{key} {show[0]} -> {show[1]}")
    return out


def _listing(items: list[str], most: int = 6) -> str:
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def _shape_differences(plan: Plan, learner_names: list[str], impl: dict | None) -> list[str]:
    """The variables whose shape (or existence) the new config changes against the run's
    checkpoints, checked by a short-lived spawned process (TensorFlow stays out of the
    master)."""
    spec = ProcessSpec(role=POLICY, index=0, run=plan.run, config=plan.config,
                       seed=plan.seed, cuda_visible_devices="", hours_base=0.0,
                       start_time=time.time(), impl=dict(impl or DEFAULT_IMPL), threads=1)
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=runtime.check_shapes_main, args=(spec, learner_names, send),
                       name="shape-check")
    proc.start()
    send.close()
    try:
        if not receive.poll(SHAPE_CHECK_SECONDS):
            raise UserError(f"Checking the new config's variable shapes against the run's "
                            f"checkpoints took over {SHAPE_CHECK_SECONDS:.0f} s; resume with "
                            f"the run's own config (log/hps.json).")
        status, result = receive.recv()
    except EOFError:
        status, result = "error", "the checking process died without an answer"
    finally:
        proc.join(10)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
    if status != "ok":
        last = str(result).strip().splitlines()[-1] if str(result).strip() else "no message"
        raise UserError(f"The new config could not be checked against the run's checkpoints "
                        f"({last}); resume with the run's own config (log/hps.json).")
    return list(result)


def _greedy_hours(path: Path) -> float:
    """The largest `hours` in a greedy.csv (0 when there is none)."""
    best = 0.0
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return best
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) == 4:
            try:
                best = max(best, float(parts[0]))
            except ValueError:
                continue
    return best


def hours_so_far(run: RunDir) -> float:
    """The run's hours before this start: the latest of the checkpoints' counters, the
    evaluators' rows and the master's own record (state/hours.json), so time spent after the
    last checkpoint still counts."""
    values = [float((_latest_counters(run, role) or {}).get("hours", 0.0)) for role in LEARNERS]
    values.append(_greedy_hours(run.greedy_csv))
    record = util.read_json(run.hours_file)
    if isinstance(record, dict):
        values.append(float(record.get("hours", 0.0)))
    return max(values)


def check_run(plan: Plan, args: argparse.Namespace, impl: dict | None = None,
              compare_shapes: bool = True) -> RunCheck:
    """The checks on the run folder, made while holding its lock (and once before, without the
    lock and with `compare_shapes=False`, see master.main). Raises UserError when the start is
    refused; otherwise says whether the run already reached its budget, and the hours and
    notes the start carries. `compare_shapes=False` skips the variable-shape check of a
    changed config (the one check that starts a process)."""
    run = plan.run
    if not args.resume:
        if run.has_content() and not args.overwrite:
            raise UserError(f"{run.path} already holds a run; pass --resume to continue it, "
                            f"--overwrite to delete it and start over, or choose another "
                            f"--seed or --output-root.")
        return RunCheck()
    counters = _check_resumable(run)
    import replay

    finished = util.read_json(run.finished_file)
    if isinstance(finished, dict) and args.total_frames is not None \
            and args.total_frames <= int(finished.get("total_frames", 0)):
        with replay.ReplayBuffer.open(run.replay) as buf:
            frames = buf.count
        return RunCheck(finished=(
            f"{run.path} already reached its budget: it has {frames} frames (finished at "
            f"--total-frames {finished['total_frames']}), so there is nothing to do; to "
            f"extend it, resume with a larger --total-frames (more than {frames})."))
    previous = util.read_json(run.hps)
    differences = (config_differences(previous, run_hps(plan))
                   if isinstance(previous, dict) else [])
    env = plan.config["env"]
    replay.ReplayBuffer.open(run.replay, obs_dims=env["obs_dims"],
                             action_dims=env["action_dims"],
                             capacity=replay_capacity(plan.config)).close()  # same sizes
    notes: tuple[str, ...] = ()
    if differences and compare_shapes:
        checked = [row.name for row in learners(plan.config) if counters.get(row.name)]
        changed = _shape_differences(plan, checked, impl)
        if changed:
            raise UserError(f"{args.config} differs from the run's log/hps.json in "
                            f"{_listing(differences, 4)}, which changes the variables of its "
                            f"checkpoints ({_listing(changed, 3)}); resume with the run's own "
                            f"config (log/hps.json), or start a new run with --overwrite or "
                            f"another --output-root.")
        notes = (f"note: {args.config} differs from the run's log/hps.json in "
                 f"{_listing(differences)}; no variable changes shape, so the run resumes with "
                 f"the config as it is now (hps.json is kept as it was).",)
    return RunCheck(hours_base=hours_so_far(run), notes=notes)


def _check_resumable(run: RunDir) -> dict[str, dict | None]:
    """Refuse (UserError) a resume of a run that has nothing to resume from; the counters of
    each learner's newest checkpoint."""
    if not run.has_content():
        raise UserError(f"There is no run to resume in {run.path}; start it without --resume.")
    counters = {role: _latest_counters(run, role) for role in LEARNERS}
    if not any(counters.values()):
        raise UserError(f"The run in {run.path} has no checkpoint yet, so there is nothing "
                        f"to resume; start it again with --overwrite.")
    import replay

    if not replay.ReplayBuffer.exists(run.replay):
        raise UserError(f"The run in {run.path} has checkpoints but no replay buffer "
                        f"(replay/ is missing); restore that folder or start with "
                        f"--overwrite.")
    return counters
