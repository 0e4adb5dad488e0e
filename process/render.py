"""The visualizer's render process: one environment stepped and drawn into an mp4, no TensorFlow.

visualizer.py starts it with `spawn` (`RenderedEnv`, whose entry function is `_render_server`)
when it renders: Mesa's software EGL (and OSMesa) and TensorFlow cannot live in one process (the
first frame rendered in a process that has imported TensorFlow, or TensorFlow imported after a
frame, ends in a segmentation fault), so the environment runs here and this module never imports
TensorFlow, nor anything that does. The visualizer sends actions; the render process steps the
environment, renders the state after each step into the mp4 and sends back (next_obs, reward,
terminal, truncated).

Also here, because they run before the render process starts: the GL probe (`probe_mujoco_gl`,
one MuJoCo frame in a short child process, since PyOpenGL fixes its platform at import) and the
choice of MuJoCo's headless backend (`choose_mujoco_gl`: EGL, else OSMesa).

Reads nothing of ours from disk. Writes only the video: frames go to a temporary name beside it
(`.<name>.<pid>.tmp.mp4`), renamed into place when the video is finished and deleted otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from errors import UserError

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
    """A problem the user can fix, raised by the visualizer (visualizer.py) and its render
    process; the message is one sentence naming it and the fix. Defined here, the lower of the
    two modules, so that the render process need not import visualizer.py."""



# ------------------------------------------------------------------------------ GL backends


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


def is_mujoco(env) -> bool:
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



# ------------------------------------------------------------------------------ the render process


def _gl_environment(backend: str | None, user_gl: str | None) -> dict[str, str | None]:
    """MUJOCO_GL / PYOPENGL_PLATFORM for the render process (None: unset)."""
    if backend is None:  # not a MuJoCo env: leave the user's setting alone
        return {"MUJOCO_GL": user_gl}
    platform = backend if backend in ("egl", "osmesa") else os.environ.get("PYOPENGL_PLATFORM")
    return {"MUJOCO_GL": backend, "PYOPENGL_PLATFORM": platform}


def apply_environment(values: dict[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _render_server(env_config: dict, seed: int, video_path: str, fps: int | None,
                   backend: str | None, gl_env: dict, conn) -> None:
    """Entry function of the render process: owns one rgb_array env and the VideoWriter."""
    apply_environment(gl_env)  # before anything here imports mujoco
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


def _render_failure(name: str, backend: str | None, error: Exception) -> str:
    reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    if backend:
        fix = f"check the MUJOCO_GL={backend} installation"
    elif "pygame" in reason.lower():
        fix = "install pygame with `pip install \"gymnasium[box2d]\"`"
    else:
        fix = "install the environment's rendering dependencies"
    return f"{name} cannot render frames ({reason}); {fix}, or run with --no-render."
