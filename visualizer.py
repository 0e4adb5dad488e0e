"""Watch a trained agent: `python visualizer.py RUN_DIR [options]`, or the 2018 form
`python visualizer.py CONFIG GPU CHECKPOINT_DIR [options]`.

A standalone process run by hand after (or during) a run. `RUN_DIR` is a run folder made by
master.py: the config is its `log/hps.json`, the checkpoints its newest ones (`--backup UPDATES`:
the numbered backup of UPDATES policy updates; a checkpoint folder inside the run works as
RUN_DIR too), the GPU `--gpu` (default 0). In the 2018 form, `CHECKPOINT_DIR` is a run's
`checkpoints/` folder (the newest checkpoint of each role is used), the run folder itself, or one
numbered backup such as `checkpoints/backups/policy/<updates>/` (a `checkpoints/policy/ckpt-<n>/`
folder works too). The policy is restored from it and, for model-based configs, the world model
from the matching world-model checkpoint (for a backup: the world-model backup with the most
frames not beyond the policy's).

It runs `--episodes` greedy episodes (each at most `--max-frames` steps, default the config's
env.max_frames) and prints each episode's length and return and their means. For configs with
value expansion it computes, for every visited transition (s0, a0, r0, s1, d1), the weights
w[0, j] the config's reduction gives the candidate targets of horizon j = 0..H (valuerl.py's
`value_targets` with the loaded world model), and prints one text histogram per horizon: how
much STEVE trusts each rollout length over the states the agent visits.

Unless `--no-render`, the episodes are rendered without a screen into one mp4 (one frame per
step, the state after the step): MuJoCo through EGL, else OSMesa (each tried first in a short
child process, since PyOpenGL fixes its platform at import), Box2D and the pybullet Roboschool
substitutes through their own rgb_array rendering. Rendering happens in a second process (the
"render process", process/render.py, started with spawn) that never imports TensorFlow: Mesa's
software GL and TensorFlow in one process crash it. This process computes the actions and the
weights; with `--no-render` it steps the env itself and loads no GL library at all. Which
checkpoints a folder names is rundir.find_checkpoints's to decide; the GPU helpers are
process/devices.py's.

TensorFlow is imported quietly (runtime.import_tensorflow; `--verbose` keeps its start-up lines),
and only after the folders were checked, so a wrong folder is reported at once.

Reads: CONFIG or `<run>/log/hps.json`, and the checkpoint folders (process/checkpoint.py's layout).
Writes: only the video (through the render process), by default
`<run>/videos/<run name>.updates<U>.mp4` (written to a temporary name in the same folder, then
renamed).

The GPU argument sets CUDA_VISIBLE_DEVICES for this process before TensorFlow is imported, as
master.py does for the policy learner (0 also works on a machine without a GPU).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from errors import UserError
from process import (
    checkpoint,  # its layout functions import no TensorFlow
    devices,
    render,
    roles,
)
from process.checkpoint import is_complete as _complete
from process.render import RenderedEnv, VisualizerError
from process.rundir import Checkpoints, RunDir, find_checkpoints, find_run_folder

HISTOGRAM_BINS = 10
BAR_WIDTH = 40
WEIGHT_BATCH = 512  # transitions per value_targets call


# ------------------------------------------------------------------------------ arguments


USAGE = """visualizer.py RUN_DIR [--episodes N] [--video PATH] [--backup UPDATES] [options]
       visualizer.py CONFIG GPU CHECKPOINT_DIR [--episodes N] [--video PATH] [options]"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visualizer.py", usage=USAGE,
        description="Run greedy episodes of a trained STEVE/MVE/DDPG agent, print their returns "
        "and STEVE's horizon weights, and render them to an mp4. RUN_DIR is a run folder made "
        "by master.py (its config and newest checkpoints are used; a checkpoint folder inside "
        "it works too); the 2018 form names the config, the GPU and the checkpoint folder.",
    )
    parser.add_argument("positional", nargs="+", metavar="RUN_DIR",
                        help="a run folder (output/<ENV>/<EXPERIMENT>), or CONFIG GPU "
                        "CHECKPOINT_DIR: the experiment config, the GPU to use (0 also runs on "
                        "a machine without one) and a run's checkpoints/ folder or one of its "
                        "numbered backups (checkpoints/backups/policy/<updates>/)")
    parser.add_argument("--backup", type=int, default=None, metavar="UPDATES",
                        help="with RUN_DIR: use the numbered backup of the checkpoint at UPDATES "
                        "policy updates (checkpoints/backups/policy/UPDATES/) instead of the "
                        "newest checkpoint")
    parser.add_argument("--gpu", type=int, default=None, metavar="GPU",
                        help="with RUN_DIR: the GPU to use (default 0, which also runs on a "
                        "machine without one)")
    parser.add_argument("--episodes", type=int, default=3, metavar="N",
                        help="greedy episodes to run (default 3)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N",
                        help="cut each episode after N steps (default: the config's "
                        "env.max_frames)")
    parser.add_argument("--video", default=None, metavar="PATH",
                        help="where to write the mp4 (default: <run>/videos/<run name>"
                        ".updates<U>.mp4)")
    parser.add_argument("--no-render", action="store_true",
                        help="do not render; needs no GL library")
    parser.add_argument("--fps", type=int, default=None,
                        help="video frame rate (default: the environment's render_fps)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the environment's first reset (default 0)")
    parser.add_argument("--verbose", action="store_true",
                        help="let TensorFlow print its start-up lines")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, in either form. Sets `run_dir` (None in the 2018 form), `config` (None
    in the RUN_DIR form: it is the run's log/hps.json), `gpu` and `checkpoint_dir`."""
    parser = _parser()
    args = parser.parse_args(argv)
    given = args.positional
    if len(given) == 1:
        args.run_dir, args.config, args.checkpoint_dir = given[0], None, given[0]
        args.gpu = 0 if args.gpu is None else args.gpu
    elif len(given) == 3:
        if args.gpu is not None:
            parser.error("--gpu goes with the RUN_DIR form; in the form CONFIG GPU "
                         "CHECKPOINT_DIR the GPU is the second argument")
        if args.backup is not None:
            parser.error("--backup goes with the RUN_DIR form; in the form CONFIG GPU "
                         "CHECKPOINT_DIR give the backup folder itself as CHECKPOINT_DIR")
        args.run_dir, args.config, args.checkpoint_dir = None, given[0], given[2]
        try:
            args.gpu = int(given[1])
        except ValueError:
            parser.error(f"GPU must be a number, not {given[1]!r} (the form is CONFIG GPU "
                         f"CHECKPOINT_DIR, or RUN_DIR alone)")
    else:
        parser.error(f"give a run folder (RUN_DIR) or the three arguments CONFIG GPU "
                     f"CHECKPOINT_DIR, not {len(given)} arguments")
    if args.episodes < 1:
        parser.error("--episodes must be at least 1")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be at least 1")
    if args.fps is not None and args.fps < 1:
        parser.error("--fps must be at least 1")
    if args.backup is not None and args.backup < 0:
        parser.error("--backup must be a number of updates, 0 or more")
    if args.no_render and args.video is not None:
        parser.error("--video and --no-render contradict each other; choose one")
    return args


def find_run(path: str | os.PathLike) -> tuple[Path, Path]:
    """The run folder holding `path` (the folder itself or any folder inside it, such as its
    checkpoints/ or a backup) and its saved config: (run folder, its log/hps.json)."""
    given = Path(path)
    if not given.exists():
        raise VisualizerError(f"{given} does not exist; give a run folder made by master.py, "
                              f"such as output/<ENV>/<EXPERIMENT>.")
    resolved = given.resolve()
    # a run whose config moved its log folder (log_path) is found only when given itself
    own = sorted(resolved.glob(f"*/{RunDir.at(resolved).hps.name}")) if resolved.is_dir() else []
    if len(own) == 1 and not RunDir.at(resolved).hps.is_file():
        return resolved, own[0]
    run = find_run_folder(resolved)
    if run is not None:
        return run, RunDir.at(run).hps
    raise VisualizerError(f"{given} is not a run folder (there is no log/hps.json in it or "
                          f"above it); give the folder master.py made, such as "
                          f"output/<ENV>/<EXPERIMENT>, or use the form CONFIG GPU "
                          f"CHECKPOINT_DIR.")


def resolve_target(args: argparse.Namespace) -> tuple[dict, str, str]:
    """(the config, how messages name it, the checkpoint folder to give find_checkpoints)."""
    import config as config_lib

    if args.run_dir is None:
        return config_lib.load_config(args.config), args.config, args.checkpoint_dir
    run, hps = find_run(args.run_dir)
    cfg = config_lib.load_resolved(hps)
    checkpoint_dir = args.checkpoint_dir
    if args.backup is not None:
        backups = RunDir.at(run, cfg.get("save_model_path")).backup_dir(roles.POLICY)
        checkpoint_dir = backups / str(args.backup)
        if not _complete(checkpoint_dir):
            have = sorted(int(p.name) for p in backups.iterdir() if p.name.isdigit()) \
                if backups.is_dir() else []
            listing = (f"it has backups of {', '.join(map(str, have))} updates" if have
                       else "it has no numbered backup yet")
            raise VisualizerError(f"the run {run} has no policy backup of {args.backup} "
                                  f"updates ({listing}); pick one of those or leave out "
                                  f"--backup.")
    return cfg, str(hps), str(checkpoint_dir)


# ------------------------------------------------------------------------------ episodes


@dataclass
class Episode:
    """One greedy episode and its transitions (s0, a0, r0, s1, d1)."""

    length: int = 0
    ret: float = 0.0
    terminal: bool = False
    obs: list = field(default_factory=list)
    action: list = field(default_factory=list)
    reward: list = field(default_factory=list)
    next_obs: list = field(default_factory=list)
    done: list = field(default_factory=list)


def run_episodes(env, act, episodes: int, report=None) -> list[Episode]:
    """Run greedy episodes on `env` (an envwrap.Env or a RenderedEnv);
    `act(obs [B, obs]) -> actions [B, act]`; `report(number, episode)` after each one."""
    out = []
    for _ in range(episodes):
        ep = Episode()
        obs = env.reset()
        while True:
            action = np.asarray(act(obs[None]), np.float32)[0]
            next_obs, reward, terminal, truncated = env.step(action)
            ep.obs.append(obs)
            ep.action.append(action)
            ep.reward.append(reward)
            ep.next_obs.append(next_obs)
            ep.done.append(1.0 if terminal else 0.0)
            ep.length += 1
            ep.ret += reward
            if terminal or truncated:
                ep.terminal = terminal
                break
            obs = next_obs
        out.append(ep)
        if report is not None:
            report(len(out), ep)
    return out


# ------------------------------------------------------------------------------ weights


def horizon_weights(valuerl, worldmodel, episodes: list[Episode],
                    batch: int = WEIGHT_BATCH) -> np.ndarray:
    """w[0, j] of the config's reduction for every visited transition: [transitions, H+1].

    Members are drawn per batch of transitions, as in training.
    """
    import tensorflow as tf

    r0 = np.asarray([r for ep in episodes for r in ep.reward], np.float32)  # [T]
    s1 = np.asarray([s for ep in episodes for s in ep.next_obs], np.float32)  # [T, obs]
    d1 = np.asarray([d for ep in episodes for d in ep.done], np.float32)  # [T]
    rows = []
    for start in range(0, len(r0), batch):
        sl = slice(start, start + batch)
        out = valuerl.value_targets(tf.constant(r0[sl]), tf.constant(s1[sl]),
                                    tf.constant(d1[sl]), worldmodel, valuerl.draw_members())
        rows.append(np.asarray(out["w"])[0].T)  # w[0, :, B] -> [B, H+1]
    return np.concatenate(rows, axis=0)


def _reduction_name(value_expansion: dict) -> str:
    if value_expansion.get("mean_k_return"):
        return "MVE with the mean of the k-step returns"
    lam = value_expansion.get("lambda_return")
    if lam is not None and lam is not False:  # 0 is TD(0), not "off"
        return f"MVE with a TD(lambda = {lam}) mix"
    return "MVE: all weight on j = H"


def format_weights(w: np.ndarray, value_expansion: dict) -> str:
    """The text block about horizon weights w [transitions, H+1]: one histogram per horizon for
    STEVE, the fixed weights for other reductions."""
    n, H1 = w.shape
    H = H1 - 1
    lines = []
    if not value_expansion.get("steve_reweight"):
        fixed = ", ".join(f"{x:.3f}" for x in w.mean(axis=0))
        lines.append(f"horizon weights: this config does not reweight by state "
                     f"({_reduction_name(value_expansion)}); w[0, j] for j = 0..{H} is "
                     f"[{fixed}] at every one of the {n} visited states. Only STEVE configs "
                     f"(value_expansion.steve_reweight) weigh horizons by their uncertainty.")
        return "\n".join(lines)
    kind = "STEVE weights with covariances" if value_expansion.get("covariances") else \
        "STEVE weights"
    lines.append(f"{kind} w[0, j] over {n} visited states (H = {H}): how much the Q target "
                 f"trusts the j-step rollout; each row of w sums to 1")
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    for j in range(H1):
        col = w[:, j]
        counts, _ = np.histogram(np.clip(col, 0.0, 1.0), bins=edges)
        what = "no model steps: r0 + gamma Q'(s1)" if j == 0 else \
            f"{j} model step{'s' if j > 1 else ''}"
        lines.append(f"  j = {j} ({what}): mean {col.mean():.3f}, median {np.median(col):.3f}, "
                     f"min {col.min():.3f}, max {col.max():.3f}")
        top = max(int(counts.max()), 1)
        for b in range(HISTOGRAM_BINS):
            bar = "#" * int(round(BAR_WIDTH * counts[b] / top))
            close = "]" if b == HISTOGRAM_BINS - 1 else ")"
            lines.append(f"    [{edges[b]:.1f}, {edges[b + 1]:.1f}{close} {bar:<{BAR_WIDTH}} "
                         f"{counts[b]:>6d} ({100.0 * counts[b] / n:5.1f}%)")
    lines.append(f"average model use (1 - mean w[0, 0]): {1.0 - w[:, 0].mean():.3f}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main


def _describe_counters(counters: dict) -> str:
    return (f"epoch {counters.get('epoch', '?')}, {counters.get('updates', '?')} updates, "
            f"{counters.get('frames', '?')} frames")


def _default_video(ckpts: Checkpoints, counters: dict) -> Path:
    root = ckpts.run_root or ckpts.policy.parent
    name = root.name or "run"
    return root / "videos" / f"{name}.updates{counters.get('updates', 0)}.mp4"


def visualize(args: argparse.Namespace) -> int:
    """Everything `main` does, raising the user errors it turns into one sentence."""
    import config as config_lib
    import envwrap

    # This process never renders: `import mujoco` loads the GL backend MUJOCO_GL names, and
    # OSMesa next to TensorFlow crashes the process, so mujoco is told to load none here. The
    # user's value goes to the render process.
    user_gl = os.environ.get("MUJOCO_GL")
    os.environ["MUJOCO_GL"] = "disable"
    cfg, label, checkpoint_dir = resolve_target(args)
    model_based = config_lib.is_model_based(cfg)
    ve = dict(cfg["policy_config"].get("value_expansion") or {})
    gpu_note = devices.set_visible_gpu(args.gpu)  # before anything imports TensorFlow
    ckpts = find_checkpoints(checkpoint_dir, cfg, label=label)

    env_config = dict(cfg["env"])
    if args.max_frames is not None:
        env_config["max_frames"] = min(args.max_frames, int(env_config["max_frames"]))
    env = envwrap.make_env(env_config, seed=args.seed)  # checks the env before TensorFlow loads
    backend = None
    if not args.no_render:
        try:
            if render.is_mujoco(env):
                backend = render.choose_mujoco_gl(user_gl)
        finally:
            env.close()  # the render process makes its own
        env = None

    try:
        agent, model, counters = _load(cfg, ckpts, model_based, args.seed, args.verbose)
        print(f"{label}: {cfg['env']['name']}, {_algorithm(cfg, ve)}; {gpu_note}")
        print(f"policy      {ckpts.policy} ({_describe_counters(counters['policy'])})")
        if model is not None:
            print(f"world model {ckpts.worldmodel} ({_describe_counters(counters['model'])})")
        sys.stdout.flush()
        if env is None:
            path = Path(args.video) if args.video else _default_video(ckpts, counters["policy"])
            env = RenderedEnv(env_config, args.seed, path.resolve(), args.fps, backend, user_gl)
        from process.actors import PolicyActor

        actor = PolicyActor(cfg, args.seed)  # how interactors and evaluators act, too
        actor.restore(str(ckpts.policy))
        episodes = run_episodes(env, actor.greedy_action, args.episodes, report=_print_episode)
        if isinstance(env, RenderedEnv):
            env.finish_video()
    finally:
        if env is not None:
            env.close()
    _print_summary(episodes, env, backend)
    _print_weights(agent, model, episodes, ve)
    return 0


def _load(cfg: dict, ckpts: Checkpoints, model_based: bool, seed: int, verbose: bool) -> tuple:
    """Import TensorFlow (quietly, unless `verbose`) and restore the policy and, for a
    model-based config, the world model: (agent, world model or None, {"policy": counters,
    "model": counters})."""
    from process import runtime
    runtime.import_tensorflow(verbose)
    import nn
    import valuerl as valuerl_lib

    nn.configure_tensorflow(None)
    agent = valuerl_lib.ValueRL(cfg, seed=seed)
    counters = {"policy": checkpoint.restore_checkpoint(
        str(ckpts.policy), {roles.ROLE[roles.POLICY].checkpoint_key: agent}, strict=False)}
    model = None
    if model_based:
        import worldmodel as worldmodel_lib

        model = worldmodel_lib.WorldModel(cfg, seed=seed)
        counters["model"] = checkpoint.restore_checkpoint(
            str(ckpts.worldmodel), {roles.ROLE[roles.WORLDMODEL].checkpoint_key: model},
            strict=False)
    return agent, model, counters


def _print_summary(episodes: list[Episode], env, backend: str | None) -> None:
    lengths = [ep.length for ep in episodes]
    returns = [ep.ret for ep in episodes]
    print(f"mean over {len(episodes)} episodes: length {np.mean(lengths):.1f}, "
          f"return {np.mean(returns):.3f}")
    if isinstance(env, RenderedEnv):
        h, w = env.shape[:2] if env.shape else (0, 0)
        gl = f", MUJOCO_GL={backend}" if backend else ""
        print(f"video: {env.video_path} ({env.frames} frames for {sum(lengths)} steps, "
              f"{w}x{h}{gl})")


def _print_weights(agent, model, episodes: list[Episode], ve: dict) -> None:
    if model is None:  # model-free
        print("horizon weights: none, this config is model-free (no world model, no rollouts), "
              "so every Q target is r0 + gamma Q'(s1) and there are no STEVE weights.")
    elif not agent.rollout_len:
        print("horizon weights: none, this config trains a world model but has no "
              "policy_config.value_expansion, so its Q targets use no rollouts.")
    else:
        print(format_weights(horizon_weights(agent, model, episodes), ve))


def _print_episode(number: int, ep: Episode) -> None:
    end = "terminal" if ep.terminal else "cut at max frames"
    print(f"episode {number}: length {ep.length}, return {ep.ret:.3f} ({end})", flush=True)


def _algorithm(cfg: dict, ve: dict) -> str:
    if not ve:
        return "model-free (DDPG)" if not cfg.get("model_config") else "world model, no " \
                                                                       "value expansion"
    H = ve.get("rollout_len")
    if ve.get("steve_reweight"):
        return f"STEVE (H = {H}{', covariances' if ve.get('covariances') else ''})"
    return f"{_reduction_name(ve)} (H = {H})"


_ENVIRONMENT_KEYS = ("CUDA_VISIBLE_DEVICES", "MUJOCO_GL", "PYOPENGL_PLATFORM",
                     "TF_CPP_MIN_LOG_LEVEL")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    saved = {key: os.environ.get(key) for key in _ENVIRONMENT_KEYS}
    try:
        return visualize(args)
    except Exception as e:  # user errors are one sentence; anything else is a real bug
        if not isinstance(e, UserError):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        render.apply_environment(saved)  # for callers in the same process (tests)


if __name__ == "__main__":
    sys.exit(main())
