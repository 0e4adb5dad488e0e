"""Watch a trained agent: `python visualizer.py RUN_DIR [options]`, or the 2018 form
`python visualizer.py CONFIG GPU CHECKPOINT_DIR [options]`.

A standalone process run by hand after (or during) a run. `RUN_DIR` is a run folder made by
master.py: the config is its `log/hps.json`, the checkpoints its newest ones (`--backup UPDATES`:
the numbered backup made at UPDATES policy updates; a checkpoint folder inside the run works as
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
"render process", started with spawn) that never imports TensorFlow: Mesa's software GL and
TensorFlow in one process crash it. This process computes the actions and the weights; with
`--no-render` it steps the env itself and loads no GL library at all.

TensorFlow is imported quietly (runtime.import_tensorflow; `--verbose` keeps its start-up lines),
and only after the folders were checked, so a wrong folder is reported at once.

Reads: CONFIG or `<run>/log/hps.json`, and the checkpoint folders (variables.* and counters.json,
latest.json). Writes:
only the video, by default `<run>/videos/<run name>.updates<U>.mp4` (written to a temporary
name in the same folder, then renamed).

The GPU argument sets CUDA_VISIBLE_DEVICES for this process before TensorFlow is imported, as
master.py does for the policy learner (0 also works on a machine without a GPU).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import checkpoint  # its layout functions import no TensorFlow
import roles
from checkpoint import is_complete as _complete
from errors import UserError
from rundir import RunDir, find_run_folder

HISTOGRAM_BINS = 10
BAR_WIDTH = 40
WEIGHT_BATCH = 512  # transitions per value_targets call

INSTALL_EGL = "apt-get install libegl1 libgl1-mesa-dri"
INSTALL_OSMESA = "apt-get install libosmesa6"

# Renders one frame of a one-sphere MuJoCo model with the backend in MUJOCO_GL; run in a child
# process because PyOpenGL fixes its platform (egl or osmesa) the first time it is imported.
_PROBE = """
import mujoco
model = mujoco.MjModel.from_xml_string(
    "<mujoco><worldbody><light pos='0 0 2'/><geom size='0.1'/></worldbody></mujoco>")
data = mujoco.MjData(model)
mujoco.mj_forward(model, data)
renderer = mujoco.Renderer(model, 16, 16)
renderer.update_scene(data)
pixels = renderer.render()
renderer.close()
assert pixels.shape == (16, 16, 3), pixels.shape
"""


class VisualizerError(UserError):
    """A problem the user can fix; the message is one sentence naming it and the fix."""


# ------------------------------------------------------------------------------ arguments


USAGE = """visualizer.py RUN_DIR [--episodes N] [--video PATH] [--backup UPDATES] [options]
       visualizer.py CONFIG GPU CHECKPOINT_DIR [--episodes N] [--video PATH] [options]"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, in either form. Sets `run_dir` (None in the 2018 form), `config` (None
    in the RUN_DIR form: it is the run's log/hps.json), `gpu` and `checkpoint_dir`."""
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
                        help="with RUN_DIR: use the numbered backup made at UPDATES policy "
                        "updates (checkpoints/backups/policy/UPDATES/) instead of the newest "
                        "checkpoint")
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
            listing = (f"it has backups at {', '.join(map(str, have))} updates" if have
                       else "it has no numbered backup yet")
            raise VisualizerError(f"the run {run} has no policy backup made at {args.backup} "
                                  f"updates ({listing}); pick one of those or leave out "
                                  f"--backup.")
    return cfg, str(hps), str(checkpoint_dir)


# ------------------------------------------------------------------------------ checkpoints


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
    numbered = [p for p in role_dir.iterdir() if p.name.isdigit() and _complete(p)]
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
    return [p for p in role_dir.iterdir() if _complete(p)]


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
        raise VisualizerError(f"checkpoint folder {given} does not exist; {hint}.")
    if not path.is_dir():
        raise VisualizerError(f"{given} is a file, not a checkpoint folder; {hint}.")

    if not (path / "policy").is_dir() and (path / save_model_path / "policy").is_dir():
        path = path / save_model_path  # the run folder itself
    if (path / "policy").is_dir():  # a checkpoints/ (or backups/) folder
        policy = _newest(path / "policy")
        if policy is None:
            raise VisualizerError(f"{path / 'policy'} holds no complete checkpoint yet; wait for "
                                  f"the policy learner's first save, or {hint}.")
        worldmodel = _newest(path / "worldmodel") if model_based else None
        if model_based and not (path / "worldmodel").is_dir():
            raise VisualizerError(f"{path} has no worldmodel/ folder, so it comes from a "
                                  f"model-free run, but {label} is model-based; give the config "
                                  f"the run was made with.")
        if model_based and worldmodel is None:
            raise VisualizerError(f"{path / 'worldmodel'} holds no complete world-model "
                                  f"checkpoint, which this model-based config needs; wait for "
                                  f"the world-model learner's first save, or {hint}.")
        return Checkpoints(policy, worldmodel, _run_root(path, save_model_path))

    if _complete(path):  # one checkpoint: a numbered backup or a ckpt-<n> folder
        role = path.parent.name
        if role not in roles.LEARNERS:
            raise VisualizerError(f"{given} is a checkpoint but not inside a policy/ or "
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
                raise VisualizerError(f"no world-model checkpoint was found next to {given} "
                                      f"(looked in {path.parent.parent / 'worldmodel'}); this "
                                      f"model-based config needs one, so {hint}.")
            return Checkpoints(path, other, run_root)
        if not model_based:
            raise VisualizerError(f"{given} is a world-model checkpoint but {label} is "
                                  f"model-free; give a policy checkpoint folder instead.")
        if other is None:
            raise VisualizerError(f"no policy checkpoint was found next to the world-model "
                                  f"checkpoint {given}; {hint}.")
        return Checkpoints(other, path, run_root)

    raise VisualizerError(f"{given} holds no STEVE checkpoint (neither a policy/ folder nor "
                          f"variables.index and counters.json); {hint}.")


# ------------------------------------------------------------------------------ devices


def set_visible_gpu(gpu: int) -> str:
    """Show TensorFlow only GPU `gpu` (or none on a machine without one); returns a note.

    Must run before TensorFlow is imported in this process.
    """
    from devices import assign_devices, visible_gpus

    device, _, note = assign_devices(gpu, False, visible_gpus())  # or UserError
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    return note


# ------------------------------------------------------------------------------ rendering


def probe_mujoco_gl(backend: str, env: dict | None = None, timeout: float = 120.0) -> str | None:
    """Try rendering one MuJoCo frame with MUJOCO_GL=`backend` in a child process.

    Returns None if it worked, else a short reason (the last line the child printed).
    `env` replaces this process's environment for the child (tests use it).
    """
    child_env = dict(os.environ if env is None else env)
    child_env["MUJOCO_GL"] = backend
    if backend in ("egl", "osmesa"):
        child_env["PYOPENGL_PLATFORM"] = backend
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], env=child_env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"a test render took more than {timeout:.0f} s"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    reason = lines[-1] if lines else f"exit code {done.returncode}"
    return reason if len(reason) <= 160 else reason[:157] + "..."


def choose_mujoco_gl(preset: str | None, probe=probe_mujoco_gl) -> str:
    """Pick MuJoCo's headless GL backend (a MUJOCO_GL value) for the render process.

    `preset` (the user's MUJOCO_GL) is the only one tried when given; otherwise EGL, then
    OSMesa. Raises VisualizerError, naming what to install, when none works.
    """
    backends = [preset] if preset else ["egl", "osmesa"]
    reasons = {}
    for backend in backends:
        reason = probe(backend)
        if reason is None:
            return backend
        reasons[backend] = reason
    tried = "; ".join(f"MUJOCO_GL={b} failed ({r})" for b, r in reasons.items())
    if preset:
        fix = (f"unset MUJOCO_GL to let the visualizer try EGL and OSMesa, install what "
               f"MUJOCO_GL={preset} needs")
    else:
        fix = f"install EGL (`{INSTALL_EGL}`) or OSMesa (`{INSTALL_OSMESA}`)"
    raise VisualizerError(f"MuJoCo cannot render without a screen here: {tried}; {fix}, or run "
                          f"with --no-render.")


def _is_mujoco(env) -> bool:
    return type(env.gym_env).__module__.startswith("gymnasium.envs.mujoco")


def _temporary_video(path: Path, pid: int) -> Path:
    """Where process `pid` writes the mp4 for `path` until it is complete."""
    return path.parent / f".{path.stem}.{pid}.tmp.mp4"


class VideoWriter:
    """Frames into an mp4 via imageio + imageio-ffmpeg, written to a temporary name in the target
    folder and renamed into place by `close()`."""

    def __init__(self, path: Path, fps: int):
        try:
            import imageio.v2 as imageio
            import imageio_ffmpeg  # noqa: F401  (the ffmpeg binary imageio writes mp4 with)
        except ImportError as e:
            raise VisualizerError(f"writing an mp4 needs imageio and imageio-ffmpeg ({e}); "
                                  f"install them with `pip install imageio imageio-ffmpeg`, or "
                                  f"run with --no-render.") from e
        self.path = path
        self.tmp = _temporary_video(path, os.getpid())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp.touch()
        except OSError as e:
            raise VisualizerError(f"cannot write the video to {path} ({e.strerror or e}); "
                                  f"choose another place with --video.") from e
        self.frames = 0
        self.shape: tuple[int, ...] | None = None
        self._writer = imageio.get_writer(str(self.tmp), format="FFMPEG", fps=fps,
                                          codec="libx264", pixelformat="yuv420p",
                                          macro_block_size=2, quality=7)

    def append(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] not in (3, 4):
            raise VisualizerError(f"the environment rendered an array of shape {frame.shape}, "
                                  f"not an RGB image; run with --no-render.")
        frame = np.ascontiguousarray(frame[:, :, :3], dtype=np.uint8)
        h, w = frame.shape[:2]
        if h % 2 or w % 2:  # yuv420p needs even sizes: repeat the last row / column
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self.shape is None:
            self.shape = frame.shape
        self._writer.append_data(frame)
        self.frames += 1

    def close(self) -> None:
        self._writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._writer.close()
        except Exception:  # the file is discarded anyway
            pass
        self.tmp.unlink(missing_ok=True)


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


# ------------------------------------------------------------------------------ render process
#
# Mesa's software EGL (and OSMesa) and TensorFlow cannot live in one process: the first frame
# rendered in a process that has imported TensorFlow (or TensorFlow imported after a frame)
# ends in a segmentation fault. So when rendering, the environment runs in a child process
# started with `spawn` that never imports TensorFlow: this process sends it actions, it steps
# the environment, renders the state after each step into the mp4 and sends back
# (next_obs, reward, terminal, truncated).


def _gl_environment(backend: str | None, user_gl: str | None) -> dict[str, str | None]:
    """MUJOCO_GL / PYOPENGL_PLATFORM for the render process (None: unset)."""
    if backend is None:  # not a MuJoCo env: leave the user's setting alone
        return {"MUJOCO_GL": user_gl}
    platform = backend if backend in ("egl", "osmesa") else os.environ.get("PYOPENGL_PLATFORM")
    return {"MUJOCO_GL": backend, "PYOPENGL_PLATFORM": platform}


def _apply_environment(values: dict[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _render_server(env_config: dict, seed: int, video_path: str, fps: int | None,
                   backend: str | None, gl_env: dict, conn) -> None:
    """Entry function of the render process: owns one rgb_array env and the VideoWriter."""
    _apply_environment(gl_env)  # before anything here imports mujoco
    env = video = None
    name = str(env_config.get("name"))
    try:
        try:
            import envwrap

            env = envwrap.make_env(env_config, seed=seed, render_mode="rgb_array")
            rate = fps or int(env.gym_env.metadata.get("render_fps") or 30)
            video = VideoWriter(Path(video_path), rate)
        except Exception as e:
            conn.send(_error_reply(e, name, backend))
            return
        conn.send(("ok", None))
        while True:
            command, payload = conn.recv()
            try:
                if command == "reset":
                    reply = env.reset()
                elif command == "step":
                    reply = env.step(payload)
                    try:
                        frame = env.render()
                    except Exception as e:
                        raise VisualizerError(_render_failure(name, backend, e)) from e
                    video.append(frame)
                elif command == "close":
                    video.close()
                    reply = (video.frames, video.shape)
                    video = None
                else:
                    raise ValueError(f"unknown command {command!r}")
            except Exception as e:
                conn.send(_error_reply(e, name, backend))
                return
            conn.send(("ok", reply))
            if command == "close":
                return
    except (EOFError, OSError):
        return  # the visualizer went away
    finally:
        if video is not None:
            video.abort()
        if env is not None:
            env.close()


def _error_reply(e: Exception, name: str, backend: str | None) -> tuple[str, str]:
    if isinstance(e, UserError):
        return "error", str(e)
    import traceback

    return "bug", "".join(traceback.format_exception(e))


class RenderedEnv:
    """The env of `make_env(env_config, seed, "rgb_array")`, stepped in a render process that
    writes every step's frame to `video_path`; `close()` finishes the video."""

    def __init__(self, env_config: dict, seed: int, video_path: Path, fps: int | None,
                 backend: str | None, user_gl: str | None = None):
        import multiprocessing as mp

        self.name = str(env_config.get("name"))
        self.backend = backend
        self.video_path = video_path
        self.frames = 0
        self.shape: tuple[int, ...] | None = None
        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._process = ctx.Process(
            target=_render_server, name="visualizer-render", daemon=True,
            args=(env_config, seed, str(video_path), fps, backend,
                  _gl_environment(backend, user_gl), child_conn),
        )
        self._process.start()
        child_conn.close()
        self._closed = False
        self._receive()

    def _receive(self):
        try:
            status, payload = self._conn.recv()
        except (EOFError, OSError):
            self._process.join(10)
            code = self._process.exitcode
            how = f"was killed by signal {-code}" if code is not None and code < 0 else \
                f"exited with code {code}"
            gl = f" with MUJOCO_GL={self.backend}" if self.backend else ""
            raise VisualizerError(
                f"the process rendering {self.name}{gl} {how}; try another GL backend (for "
                f"example MUJOCO_GL=osmesa after `{INSTALL_OSMESA}`), or run with --no-render."
            ) from None
        if status == "error":
            self._closed = True
            raise VisualizerError(payload)
        if status == "bug":
            self._closed = True
            raise RuntimeError(f"the render process failed:\n{payload}")
        return payload

    def _call(self, command: str, payload=None):
        try:
            self._conn.send((command, payload))
        except (BrokenPipeError, OSError):
            pass  # the child is gone; _receive says why
        return self._receive()

    def reset(self) -> np.ndarray:
        return self._call("reset")

    def step(self, action) -> tuple[np.ndarray, float, bool, bool]:
        out = self._call("step", np.asarray(action, np.float32))
        self.frames += 1
        return out

    def finish_video(self) -> None:
        """Write the mp4 in place; sets `frames` and `shape` (h, w, 3) from the writer."""
        self.frames, self.shape = self._call("close")
        self._closed = True

    def close(self) -> None:
        """Stop the render process; without `finish_video()` the partial video is discarded."""
        if not self._closed:
            self._conn.close()  # the child sees EOF, discards the partial video, exits
        self._process.join(30)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        # a render process that crashed cannot remove its partial video itself
        _temporary_video(self.video_path, self._process.pid).unlink(missing_ok=True)


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
    if value_expansion.get("lambda_return"):
        return f"MVE with a TD(lambda = {value_expansion['lambda_return']}) mix"
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

    # This process never renders: `import mujoco` loads the GL backend MUJOCO_GL names, and
    # OSMesa next to TensorFlow crashes the process, so mujoco is told to load none here. The
    # user's value goes to the render process.
    user_gl = os.environ.get("MUJOCO_GL")
    os.environ["MUJOCO_GL"] = "disable"
    cfg, label, checkpoint_dir = resolve_target(args)
    model_based = config_lib.is_model_based(cfg)
    ve = dict(cfg["policy_config"].get("value_expansion") or {})
    gpu_note = set_visible_gpu(args.gpu)  # before anything imports TensorFlow
    ckpts = find_checkpoints(checkpoint_dir, cfg, label=label)

    import envwrap

    env_config = dict(cfg["env"])
    if args.max_frames is not None:
        env_config["max_frames"] = min(args.max_frames, int(env_config["max_frames"]))
    env = envwrap.make_env(env_config, seed=args.seed)  # checks the env before TensorFlow loads
    backend = None
    if not args.no_render:
        try:
            if _is_mujoco(env):
                backend = choose_mujoco_gl(user_gl)
        finally:
            env.close()  # the render process makes its own
        env = None

    try:
        import runtime

        runtime.import_tensorflow(args.verbose)  # quietly, unless --verbose
        import nn
        import valuerl as valuerl_lib

        nn.configure_tensorflow(None)
        agent = valuerl_lib.ValueRL(cfg, seed=args.seed)
        counters = checkpoint.restore_checkpoint(
            str(ckpts.policy), {roles.ROLE[roles.POLICY].checkpoint_key: agent}, strict=False)
        print(f"{label}: {cfg['env']['name']}, {_algorithm(cfg, ve)}; {gpu_note}")
        print(f"policy      {ckpts.policy} ({_describe_counters(counters)})")
        model = None
        if model_based:
            import worldmodel as worldmodel_lib

            model = worldmodel_lib.WorldModel(cfg, seed=args.seed)
            wm_counters = checkpoint.restore_checkpoint(
                str(ckpts.worldmodel), {roles.ROLE[roles.WORLDMODEL].checkpoint_key: model},
                strict=False)
            print(f"world model {ckpts.worldmodel} ({_describe_counters(wm_counters)})")
        sys.stdout.flush()

        if env is None:
            path = Path(args.video) if args.video else _default_video(ckpts, counters)
            env = RenderedEnv(env_config, args.seed, path.resolve(), args.fps, backend, user_gl)
        episodes = run_episodes(env, agent.greedy_action, args.episodes, report=_print_episode)
        if isinstance(env, RenderedEnv):
            env.finish_video()
    finally:
        if env is not None:
            env.close()

    lengths = [ep.length for ep in episodes]
    returns = [ep.ret for ep in episodes]
    print(f"mean over {len(episodes)} episodes: length {np.mean(lengths):.1f}, "
          f"return {np.mean(returns):.3f}")
    if isinstance(env, RenderedEnv):
        h, w = env.shape[:2] if env.shape else (0, 0)
        gl = f", MUJOCO_GL={backend}" if backend else ""
        print(f"video: {env.video_path} ({env.frames} frames for {sum(lengths)} steps, "
              f"{w}x{h}{gl})")

    if not model_based:
        print("horizon weights: none, this config is model-free (no world model, no rollouts), "
              "so every Q target is r0 + gamma Q'(s1) and there are no STEVE weights.")
    elif not agent.rollout_len:
        print("horizon weights: none, this config trains a world model but has no "
              "policy_config.value_expansion, so its Q targets use no rollouts.")
    else:
        print(format_weights(horizon_weights(agent, model, episodes), ve))
    return 0


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


def _render_failure(name: str, backend: str | None, error: Exception) -> str:
    reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    if backend:
        fix = f"check the MUJOCO_GL={backend} installation"
    elif "pygame" in reason.lower():
        fix = "install pygame with `pip install \"gymnasium[box2d]\"`"
    else:
        fix = "install the environment's rendering dependencies"
    return f"{name} cannot render frames ({reason}); {fix}, or run with --no-render."


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
        _apply_environment(saved)  # for callers in the same process (tests)


if __name__ == "__main__":
    sys.exit(main())
