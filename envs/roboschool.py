"""Roboschool's humanoid tasks through pybullet's port, behind the gymnasium 5-tuple API.

Used by whichever process builds an environment (interactors, evaluators, the visualizer) via
`envwrap.make_env`; reads pybullet's bundled robot and scene files, writes nothing to disk.

Why pybullet: Roboschool itself has no wheel for Python 3.11. `pybullet_envs` (pybullet 3.2.7)
is the port of Roboschool's locomotion tasks to pybullet (Roboschool, too, simulated with
Bullet): the same humanoid model (`humanoid_symmetric.xml`), the same 44 observations (8 body
values, 17 joint position/speed pairs, 2 foot contacts) and 17 actions in [-1, 1], the same
reward terms (alive bonus, progress towards the target, electricity, stall-torque and
joint-limit costs) and the same termination (the torso drops below 0.78 m). A MuJoCo
re-implementation of our own would only approximate all of that.

Known differences of the flag-run port from Roboschool's RoboschoolHumanoidFlagrun (from
Roboschool's published source; we keep pybullet's behaviour unchanged): Roboschool halved the
electricity cost for flag-run and put the first flag straight ahead in half of the episodes;
pybullet keeps the humanoid's electricity cost and always draws the first flag uniformly over
the central half of the field. Both face the humanoid along +x at the start (pybullet's
`random_yaw = True` sits on the env class, which the robot never reads) and move the flag
after 150 frames or when it is reached.

Two problems stand between pybullet_envs and current gymnasium, and this module works around
both without touching the installed package:
- `pybullet_envs/__init__.py` registers every task through gym's removed `registry.env_specs`
  and fails. We never run it: a bare package object for `pybullet_envs` (same `__path__`) is put
  into `sys.modules` before importing `pybullet_envs.gym_locomotion_envs`. A later
  `import pybullet_envs` in this process therefore gets that bare package (no registrations)
  instead of an ImportError.
- Its modules `import gym`. While (and only while) they are imported, `sys.modules["gym"]` is
  a small module forwarding `Env`, `spaces` and `utils` to gymnasium; the previous entries
  (normally none) are put back afterwards and `sys.path` (which pybullet_envs extends) is
  restored. The pybullet modules keep their own reference to that forwarding module; no other
  code sees a `gym` module. pybullet_envs also loads `robot_bases` and `robot_locomotors` as
  top-level module names; those stay in `sys.modules`.

Behaviour kept from pybullet/Roboschool: termination when `alive < 0` (torso too low); no time
limit inside the env (pybullet's registration adds a 1000-step TimeLimit, Roboschool's did too;
`envwrap` counts `max_frames` itself). Physics runs in its own DIRECT (headless) client per env;
pybullet's default would first try to attach to a shared-memory server, which would make two
envs share one simulation if such a server were running, and prints "argv[0]=" lines.
`render()` gives a 320x240 RGB frame from pybullet's software renderer (no GL needed).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import types
import warnings
from typing import Any

import gymnasium
import numpy as np

# gymnasium id -> class name in pybullet_envs.gym_locomotion_envs
TASKS = {
    "HumanoidBulletEnv-v0": "HumanoidBulletEnv",
    "HumanoidFlagrunBulletEnv-v0": "HumanoidFlagrunBulletEnv",
}
OBS_DIMS = 44
ACTION_DIMS = 17
# pybullet_envs registers both with max_episode_steps=1000; kept for gymnasium.make() users.
_REGISTERED_MAX_STEPS = 1000

_locomotion_module: types.ModuleType | None = None


class PybulletUnavailable(ImportError):
    """pybullet or its bundled pybullet_envs package cannot be imported."""


@contextlib.contextmanager
def _quiet_fd(fd: int):
    """Send what C code writes to file descriptor `fd` to /dev/null for the duration."""
    stream = sys.stdout if fd == 1 else sys.stderr
    with contextlib.suppress(Exception):
        stream.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor (e.g. a daemon without stderr): nothing to hide
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
        yield
    finally:
        with contextlib.suppress(Exception):
            stream.flush()
        os.dup2(saved, fd)
        os.close(saved)


def _import_pybullet() -> types.ModuleType:
    """Import pybullet without its "pybullet build time" line on stderr."""
    if "pybullet" in sys.modules:
        return sys.modules["pybullet"]
    try:
        with _quiet_fd(2):
            import pybullet
    except ImportError as e:
        raise PybulletUnavailable(
            f"pybullet cannot be imported ({e}); install it with "
            "`pip install pybullet==3.2.7` (it is in requirements.txt)."
        ) from e
    return pybullet


def _forwarding_gym_module() -> types.ModuleType:
    gym = types.ModuleType("gym")
    gym.__doc__ = "Forwards the names pybullet_envs uses to gymnasium (see roboschool_compat)."
    gym.Env = gymnasium.Env
    gym.spaces = gymnasium.spaces
    gym.utils = gymnasium.utils
    # env_bases.py compares this with 0.9.6 to decide on old-style method aliases.
    gym.__version__ = "0.21.0"
    return gym


def _parse_version_stub() -> types.ModuleType:
    """A stand-in `pkg_resources` with only `parse_version`, for Pythons without setuptools."""
    module = types.ModuleType("pkg_resources")

    def parse_version(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split(".") if part.isdigit())

    module.parse_version = parse_version
    return module


def locomotion_module() -> types.ModuleType:
    """Import and return `pybullet_envs.gym_locomotion_envs` (see the module docstring)."""
    global _locomotion_module
    if _locomotion_module is not None:
        return _locomotion_module
    _import_pybullet()
    spec = importlib.util.find_spec("pybullet_envs")
    if spec is None or not spec.submodule_search_locations:
        raise PybulletUnavailable(
            "pybullet is installed without its pybullet_envs package; reinstall it with "
            "`pip install --force-reinstall pybullet==3.2.7`."
        )
    shim_names = ("gym", "gym.spaces", "gym.utils", "gym.utils.seeding")
    saved_modules = {name: sys.modules.get(name) for name in shim_names}
    saved_path = list(sys.path)
    gym = _forwarding_gym_module()
    sys.modules.update(
        {
            "gym": gym,
            "gym.spaces": gymnasium.spaces,
            "gym.utils": gymnasium.utils,
            "gym.utils.seeding": gymnasium.utils.seeding,
        }
    )
    added_pkg_resources = False
    try:
        if "pybullet_envs" not in sys.modules:
            package = types.ModuleType("pybullet_envs")
            package.__path__ = list(spec.submodule_search_locations)
            package.__file__ = None
            sys.modules["pybullet_envs"] = package
        if importlib.util.find_spec("pkg_resources") is None:
            sys.modules["pkg_resources"] = _parse_version_stub()
            added_pkg_resources = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pkg_resources' deprecation notice
            module = importlib.import_module("pybullet_envs.gym_locomotion_envs")
    finally:
        for name, previous in saved_modules.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
        if added_pkg_resources:
            sys.modules.pop("pkg_resources", None)
        sys.path[:] = saved_path
    _locomotion_module = module
    return module


class BulletHumanoidEnv(gymnasium.Env):
    """A pybullet Roboschool-port task with gymnasium's reset/step/render API.

    `step` returns `terminated` exactly when the pybullet env says done (the humanoid fell);
    `truncated` is always False (there is no time limit inside the env).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 60}

    def __init__(self, task: str, render_mode: str | None = None):
        if task not in TASKS.values():
            raise ValueError(f"Unknown pybullet task {task!r}; use one of {list(TASKS.values())}.")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode {render_mode!r} is not supported; use 'rgb_array'.")
        self.task = task
        self.render_mode = render_mode
        self._env = getattr(locomotion_module(), task)()
        self.observation_space = gymnasium.spaces.Box(
            -np.inf, np.inf, shape=(OBS_DIMS,), dtype=np.float32
        )
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(ACTION_DIMS,), dtype=np.float32)
        self._connected = False

    def _connect(self) -> None:
        """Give the pybullet env its own headless physics client (what its reset would do)."""
        pybullet = _import_pybullet()
        from pybullet_utils import bullet_client

        env = self._env
        with _quiet_fd(1):
            env._p = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
        env.ownsPhysicsClient = True
        env.physicsClientId = env._p._client
        env._p.resetSimulation()
        env._p.setPhysicsEngineParameter(deterministicOverlappingPairs=1)
        self._connected = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.seed(seed)  # seeds the env's and the robot's shared np_random
        if not self._connected:
            self._connect()
        obs = self._env.reset()
        return np.asarray(obs, dtype=np.float32), {}

    def step(self, action):
        obs, reward, done, info = self._env.step(np.asarray(action, dtype=np.float64))
        return np.asarray(obs, dtype=np.float32), float(reward), bool(done), False, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self._env.render(mode="rgb_array")

    def close(self):
        if self._connected:
            self._env.close()
            self._connected = False


def register() -> None:
    """Register the ids in `TASKS` with gymnasium (once; later calls do nothing)."""
    for env_id, task in TASKS.items():
        if env_id in gymnasium.registry:
            continue
        gymnasium.register(
            id=env_id,
            entry_point=BulletHumanoidEnv,
            kwargs={"task": task},
            max_episode_steps=_REGISTERED_MAX_STEPS,
        )
