"""Environments for STEVE: every env a config names, built through gymnasium.

Used by the interactor and evaluator processes (and the visualizer) to step environments; reads
nothing of ours from disk and writes nothing (the simulators read their bundled model files).

- `make_env(env_config)` builds one `Env` from a resolved config's "env" section, e.g.
  {"name": "Hopper-v5", "obs_dims": 11, "action_dims": 3, "max_frames": 1000, ...}. Any
  gymnasium id with Box observation and action spaces works: the MuJoCo tasks (Hopper-v5,
  Walker2d-v5, HalfCheetah-v5, Swimmer-v5, Humanoid-v5, InvertedPendulum-v5),
  BipedalWalkerHardcore-v3 (Box2D), and the Roboschool humanoids through pybullet's port,
  "HumanoidBulletEnv-v0" and "HumanoidFlagrunBulletEnv-v0" (see envs/roboschool.py for why
  that port; these two are registered with gymnasium here, the first time one is asked for).
- `Env.step(action)` takes the policy's action in [-1, 1]: clipped to [-1, 1], then scaled
  linearly to the action space's [low, high]. It returns (next_obs, reward, terminal,
  truncated). `terminal` is a real termination (d = 1 in the targets); `truncated` means the
  episode hit `max_frames` steps (or the simulator cut it) without terminating, which is not
  terminal (docs/algorithm.md section 5), so targets bootstrap through it. We count `max_frames`
  ourselves on the unwrapped env: gymnasium's TimeLimit (e.g. 2000 for
  BipedalWalkerHardcore-v3) never applies. Rewards are raw; the learner applies reward_scale.
- `EnvBatch` steps n envs in a loop and resets finished ones, for interactors and evaluators.
- `Env.sim_state()`: a MuJoCo env's exact simulator state, qpos then qvel (float64
  [state_dims]); `state_dims` is 0 for other simulators (Box2D, Bullet), which have none.
  `EnvBatch.step` returns the state every step started from and the one it reached, which the
  interactors store in the replay buffer so that `envs.mujoco_oracle` can replay the step. For
  the v5 tasks qpos and qvel are the whole state that matters (no actuator activations, mocap
  bodies or plugins; time is read by none of their rewards): tests/test_oracle.py checks that
  setting them and stepping gives next_obs, reward and termination back.
- Observation and action sizes come from the env; a config that states other sizes is refused
  with an `EnvError`, as are unknown ids and missing simulator packages.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from typing import Any, NamedTuple

import gymnasium
import numpy as np

from errors import UserError

# The 2018 configs named these; they have no installable package any more.
_ROBOSCHOOL_IDS = {
    "RoboschoolHumanoid-v1": "HumanoidBulletEnv-v0",
    "RoboschoolHumanoidFlagrun-v1": "HumanoidFlagrunBulletEnv-v0",
}


class EnvError(UserError, ValueError):
    """The env a config asks for cannot be built (unknown id, wrong sizes, missing package)."""


def _is_pybullet_id(name: str) -> bool:
    from envs import roboschool as roboschool_compat
    return name in roboschool_compat.TASKS


def _check_config(env_config: dict) -> tuple[str, int]:
    if not isinstance(env_config, dict):
        raise EnvError(
            f"The env config must be a dict (the resolved config's 'env' section), got "
            f"{type(env_config).__name__}; pass config['env']."
        )
    name = env_config.get("name")
    if not isinstance(name, str) or not name:
        raise EnvError(
            "The env config has no 'name'; set env.name to a gymnasium id such as 'Hopper-v5'."
        )
    max_frames = env_config.get("max_frames")
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise EnvError(
            f"env.max_frames for {name} is {max_frames!r}; set it to a positive integer "
            "(1000 in every 2018 config)."
        )
    return name, max_frames


# gymnasium's own HalfCheetah XML triggers this MuJoCo 4 compiler notice; it is harmless.
_KNOWN_MUJOCO_NOTICES = ("compiler attribute 'settotalmass' is deprecated",)


@contextlib.contextmanager
def _mujoco_warnings_as_python_warnings():
    """While building an env, turn MuJoCo's C warnings into Python warnings.

    Without this, MuJoCo prints them to stderr and appends them to MUJOCO_LOG.TXT in the
    current directory (every process building HalfCheetah-v5 would write that file). Warnings
    during stepping (e.g. an unstable simulation) keep MuJoCo's default handling.
    """
    try:
        import mujoco
    except ImportError:
        yield
        return

    def forward(message: str) -> None:
        if not message.startswith(_KNOWN_MUJOCO_NOTICES):
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(forward)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def _gym_make(name: str, render_mode: str | None) -> gymnasium.Env:
    """gymnasium.make(name) with its wrappers (TimeLimit included) removed, or an EnvError."""
    if name in _ROBOSCHOOL_IDS:
        raise EnvError(
            f"{name} needs Roboschool, which has no package for current Python; set env.name "
            f"to {_ROBOSCHOOL_IDS[name]!r}, pybullet's port of the same task."
        )
    if _is_pybullet_id(name):
        from envs import roboschool as roboschool_compat
        roboschool_compat.register()
    kwargs: dict[str, Any] = {}
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
        no_screen = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
        if render_mode == "rgb_array" and no_screen:
            # gymnasium picks MuJoCo's GL backend when the first frame is rendered; without a
            # screen only EGL (or OSMesa, chosen by setting MUJOCO_GL yourself) can work.
            os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        with _mujoco_warnings_as_python_warnings():
            wrapped = gymnasium.make(name, disable_env_checker=True, **kwargs)
    except gymnasium.error.DependencyNotInstalled as e:
        raise EnvError(
            f"{name} needs a package that is not installed ({e}); install the project's "
            "requirements with `pip install -r requirements.txt`."
        ) from e
    except gymnasium.error.Error as e:
        raise EnvError(
            f"gymnasium cannot make environment id {name!r} ({e}); set env.name to a registered "
            "gymnasium id such as 'Hopper-v5', or 'HumanoidBulletEnv-v0' / "
            "'HumanoidFlagrunBulletEnv-v0' for the Roboschool tasks."
        ) from e
    except ImportError as e:
        raise EnvError(
            f"{name} cannot be built because an import failed ({e}); install the project's "
            "requirements with `pip install -r requirements.txt`."
        ) from e
    return wrapped.unwrapped


class Env:
    """One environment with the project's step contract (see the module docstring).

    Attributes: `name`, `obs_dims`, `action_dims`, `max_frames`, `action_low`, `action_high`
    (float32 arrays [action_dims]), `gym_env` (the unwrapped gymnasium env, for rendering
    helpers and tests), `steps` (steps taken in the current episode).
    """

    def __init__(self, env_config: dict, seed: int | None = None, render_mode: str | None = None):
        name, max_frames = _check_config(env_config)
        self.name = name
        self.max_frames = max_frames
        self.render_mode = render_mode
        self.gym_env = _gym_make(name, render_mode)
        try:
            self._check_spaces(env_config)
        except EnvError:
            self.gym_env.close()
            raise
        self._seed = seed
        self._first_reset = True
        self.steps = 0
        self._needs_reset = True
        if seed is not None:
            self.gym_env.action_space.seed(seed)

    def _check_spaces(self, env_config: dict) -> None:
        obs_space = self.gym_env.observation_space
        act_space = self.gym_env.action_space
        Box = gymnasium.spaces.Box
        if not isinstance(obs_space, Box) or not isinstance(act_space, Box):
            raise EnvError(
                f"{self.name} has a {type(obs_space).__name__} observation space and a "
                f"{type(act_space).__name__} action space, but STEVE needs Box (continuous) "
                "spaces for both; choose a continuous-control environment."
            )
        self._obs_shape = obs_space.shape
        self._act_shape = act_space.shape
        self.obs_dims = int(math.prod(obs_space.shape))
        self.action_dims = int(math.prod(act_space.shape))
        self.action_low = np.asarray(act_space.low, dtype=np.float32).reshape(-1)
        self.action_high = np.asarray(act_space.high, dtype=np.float32).reshape(-1)
        if not (np.all(np.isfinite(self.action_low)) and np.all(np.isfinite(self.action_high))):
            raise EnvError(
                f"{self.name} has unbounded actions, so actions in [-1, 1] cannot be scaled to "
                "them; choose an environment with a bounded action space."
            )
        self._act_dtype = act_space.dtype
        model = getattr(self.gym_env, "model", None)  # a MuJoCo env's MjModel
        self.state_dims = int(model.nq + model.nv) if _is_mujoco_model(model) else 0
        for key, actual, what in (
            ("obs_dims", self.obs_dims, "observations"),
            ("action_dims", self.action_dims, "action dimensions"),
        ):
            stated = env_config.get(key)
            if stated is not None and stated != actual:
                raise EnvError(
                    f"The config says env.{key} = {stated} but {self.name} has {actual} "
                    f"{what}; set env.{key} to {actual} in the env config."
                )

    def scale_action(self, action) -> np.ndarray:
        """Clip a policy action to [-1, 1] and map it linearly onto [action_low, action_high]."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (self.action_dims,):
            raise ValueError(
                f"{self.name} takes actions of {self.action_dims} values, got shape "
                f"{np.shape(action)}."
            )
        return self.scale_actions(a[None])[0]

    def scale_actions(self, actions: np.ndarray) -> np.ndarray:
        """scale_action for a batch [n, action_dims] at once (what EnvBatch uses)."""
        a = np.asarray(actions, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"Action for {self.name} is not finite: {a}.")
        a = np.clip(a, -1.0, 1.0)
        low = self.action_low.astype(np.float64)
        high = self.action_high.astype(np.float64)
        scaled = low + (a + 1.0) * 0.5 * (high - low)
        return scaled.astype(self._act_dtype).reshape((len(a), *self._act_shape))

    def _obs(self, obs) -> np.ndarray:
        return np.asarray(obs, dtype=np.float32).reshape(self.obs_dims)

    def sim_state(self) -> np.ndarray | None:
        """The simulator's exact state now, qpos then qvel, float64 [state_dims]; None where
        the env is not a MuJoCo one (state_dims 0)."""
        if not self.state_dims:
            return None
        data = self.gym_env.data
        return np.concatenate([data.qpos, data.qvel]).astype(np.float64)

    def reset(self) -> np.ndarray:
        """Start an episode; returns the first observation, float32 [obs_dims]."""
        if self._first_reset:
            obs, _ = self.gym_env.reset(seed=self._seed)
            self._first_reset = False
        else:
            obs, _ = self.gym_env.reset()
        self.steps = 0
        self._needs_reset = False
        return self._obs(obs)

    def step(self, action) -> tuple[np.ndarray, float, bool, bool]:
        """One step from a policy action in [-1, 1] -> (next_obs, reward, terminal, truncated)."""
        return self.step_scaled(self.scale_action(action))

    def step_scaled(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        """`step` for an action already in the env's own bounds (from `scale_actions`)."""
        if self._needs_reset:
            raise RuntimeError(
                f"{self.name}: step() called on a finished or never-started episode; "
                "call reset() first."
            )
        obs, reward, terminated, env_truncated, _ = self.gym_env.step(action)
        self.steps += 1
        terminal = bool(terminated)
        # A time-out is not terminal; a termination on the last allowed step stays terminal.
        truncated = not terminal and (self.steps >= self.max_frames or bool(env_truncated))
        if terminal or truncated:
            self._needs_reset = True
        return self._obs(obs), float(reward), terminal, truncated

    def render(self) -> np.ndarray:
        """The current frame as an RGB uint8 array [height, width, 3]."""
        if self.render_mode != "rgb_array":
            raise RuntimeError(
                f"{self.name} was made with render_mode={self.render_mode!r}; make it with "
                "render_mode='rgb_array' to get frames."
            )
        return np.asarray(self.gym_env.render())

    def close(self) -> None:
        self.gym_env.close()

    def __repr__(self) -> str:
        return (
            f"Env({self.name!r}, obs_dims={self.obs_dims}, action_dims={self.action_dims}, "
            f"max_frames={self.max_frames})"
        )


def _is_mujoco_model(model: Any) -> bool:
    try:
        import mujoco
    except ImportError:
        return False
    return isinstance(model, mujoco.MjModel)


def make_env(env_config: dict, seed: int | None = None, render_mode: str | None = None) -> Env:
    """Build the environment a resolved config's "env" section names (raises EnvError)."""
    return Env(env_config, seed=seed, render_mode=render_mode)


class BatchStep(NamedTuple):
    """What `EnvBatch.step` returns; arrays have the batch (n envs) as first axis."""

    next_obs: np.ndarray  # [n, obs_dims] float32: the true successor s' of each env's obs
    reward: np.ndarray  # [n] float32, raw (reward_scale is the learner's business)
    terminal: np.ndarray  # [n] float32: 1.0 on a real termination, else 0.0
    truncated: np.ndarray  # [n] bool: episode hit max_frames (or the sim cut it), not terminal
    obs: np.ndarray  # [n, obs_dims] float32: what to act from next (reset obs where finished)
    finished: list[tuple[int, float, int]]  # (env_index, episode_return, episode_length)
    # MuJoCo envs only (None otherwise): the simulator state each step started from and the one
    # it reached (before any reset), float64 [n, state_dims] (Env.sim_state).
    state: np.ndarray | None = None
    next_state: np.ndarray | None = None


class EnvBatch:
    """n independent `Env`s stepped together, each reset as soon as its episode ends.

    A plain Python loop, not gymnasium's vector envs, on purpose. In gymnasium 1.x a
    `SyncVectorEnv` defaults to autoreset mode NEXT_STEP: the step after an episode ends ignores
    that env's action and returns the reset observation with reward 0 and terminated=truncated=
    False, a fake transition the interactor would have to detect and keep out of replay. In
    SAME_STEP mode the returned observation is already the reset one and the true successor
    s' sits in `info["final_obs"]` (an object array with a `_final_obs` mask), and in DISABLED
    mode the caller resets through `reset(options={"reset_mask": ...})`; either way the
    bookkeeping for (s, a, r, s', d) comes back. We also need our own max_frames count on
    unwrapped envs (not TimeLimit), and AsyncVectorEnv's worker processes would compete for
    the few cores with the learners. The loop gives `next_obs` (s', for replay) and `obs` (to
    act from) directly; it costs little next to the simulators themselves.
    """

    def __init__(self, env_config: dict, n: int, seed: int | None = None):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise EnvError(f"An EnvBatch needs a positive number of envs, got {n!r}.")
        self.n = n
        self.envs: list[Env] = []
        try:
            for i in range(n):
                self.envs.append(make_env(env_config, seed=None if seed is None else seed + i))
        except BaseException:
            self.close()
            raise
        first = self.envs[0]
        self.name = first.name
        self.obs_dims = first.obs_dims
        self.action_dims = first.action_dims
        self.max_frames = first.max_frames
        self.state_dims = first.state_dims
        self._obs = np.zeros((n, self.obs_dims), dtype=np.float32)
        self._returns = np.zeros(n, dtype=np.float64)
        self._lengths = np.zeros(n, dtype=np.int64)
        self._started = False

    def reset(self) -> np.ndarray:
        """Reset every env; returns the first observations [n, obs_dims]."""
        for i, env in enumerate(self.envs):
            self._obs[i] = env.reset()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self._started = True
        return self._obs.copy()

    def step(self, actions) -> BatchStep:
        """Step env i with actions[i] (policy actions in [-1, 1], shape [n, action_dims])."""
        if not self._started:
            raise RuntimeError("EnvBatch.step() called before reset(); call reset() first.")
        actions = np.asarray(actions)
        if actions.shape != (self.n, self.action_dims):
            raise ValueError(
                f"EnvBatch of {self.n} {self.name} envs takes actions of shape "
                f"({self.n}, {self.action_dims}), got {actions.shape}."
            )
        next_obs = np.empty((self.n, self.obs_dims), dtype=np.float32)
        reward = np.empty(self.n, dtype=np.float32)
        terminal = np.zeros(self.n, dtype=np.float32)
        truncated = np.zeros(self.n, dtype=bool)
        finished: list[tuple[int, float, int]] = []
        scaled = self.envs[0].scale_actions(actions)  # every env has the same action space
        sd = self.state_dims
        state = np.empty((self.n, sd)) if sd else None  # [n, state_dims] float64
        next_state = np.empty((self.n, sd)) if sd else None
        for i, env in enumerate(self.envs):
            if sd:
                state[i] = env.sim_state()
            o2, r, d, t = env.step_scaled(scaled[i])
            if sd:
                next_state[i] = env.sim_state()
            next_obs[i] = o2
            reward[i] = r
            terminal[i] = 1.0 if d else 0.0
            truncated[i] = t
            self._returns[i] += r
            self._lengths[i] += 1
            if d or t:
                finished.append((i, float(self._returns[i]), int(self._lengths[i])))
                self._returns[i] = 0.0
                self._lengths[i] = 0
                self._obs[i] = env.reset()
            else:
                self._obs[i] = o2
        return BatchStep(next_obs, reward, terminal, truncated, self._obs.copy(), finished,
                         state, next_state)

    def close(self) -> None:
        for env in self.envs:
            env.close()
