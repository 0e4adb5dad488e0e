"""The simulator as STEVE's world model: an oracle for value expansion (docs/oracle.md).

With `policy_config.value_expansion.oracle: true` the policy learner's imagined rollouts step the
MuJoCo simulator itself from the exact states stored in the replay buffer (envwrap.Env.sim_state,
replay.py's version 2 rows) instead of the learned ensembles: next state, observation, reward and
termination are the environment's own. Runs in the policy learner process (built by
valuerl_learner.py); bench/target_quality.py and bench/oracle_speed.py use it offline. Reads the
task's bundled model file through gymnasium; writes nothing.

- `MujocoOracle(env_config).step(state, action)`: B states [B, state_dims] (float64, qpos then
  qvel) and policy actions [B, action_dims] in [-1, 1] -> `OracleStep` (next_state, next_obs,
  reward, terminal), all B stepped in one C call (`mujoco.rollout`, `frame_skip` physics steps
  each), then the task's observation, reward and termination computed for the batch at once.
- `MujocoOracle.imagine(x, a, members, carry)`: the same as TensorFlow ops for ValueRL.rollout,
  with WorldModel.imagine's signature; `carry` is the simulator state [M, B, state_dims].
- `check_supported(env)`: refuses, in one sentence, a task without an oracle here.

The observation, reward and termination of each supported task are gymnasium v5's (read from
its source: hopper_v5.py, walker2d_v5.py, half_cheetah_v5.py, swimmer_v5.py,
inverted_pendulum_v5.py), vectorised over the batch, with the task's own parameters read off the
env (reward weights, healthy ranges, observation options). tests/test_oracle.py checks, for every
supported task, that they equal the env's own step from the same state. What differs from the
env's step: MuJoCo's constraint-solver warm start (qacc_warmstart), which the env carries from
its previous step and the oracle starts at zero. Measured on 3,000 random steps per task (the
test checks 600 each), the next state differs by round-off (3e-15 on Hopper-v5, 5e-13 on
HalfCheetah-v5) except on Walker2d-v5, where the solver's tolerance shows: 3e-7. A state the
simulator cannot continue from (non-finite numbers) ends the imagined episode: terminal 1, and
zeros in place of the numbers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

import envwrap
from errors import UserError


class OracleError(UserError, ValueError):
    """The oracle cannot serve this env or this run (no oracle for the task, no states)."""


class OracleStep(NamedTuple):
    next_state: np.ndarray  # [B, state_dims] float64: qpos then qvel after the step
    next_obs: np.ndarray  # [B, obs_dims] float32, as envwrap.Env.step returns it
    reward: np.ndarray  # [B] float64, raw (reward_scale is the learner's business)
    terminal: np.ndarray  # [B] float32: 1.0 on a real termination


# -- the tasks: observation, reward and termination of a batch (gymnasium v5's step) ----------


def _positions(env, qpos: np.ndarray, skipped: int) -> np.ndarray:
    """qpos [B, nq] without the first `skipped` positions when the env leaves them out."""
    return qpos[:, skipped:] if env._exclude_current_positions_from_observation else qpos


def _ctrl_cost(env, action: np.ndarray) -> np.ndarray:
    return env._ctrl_cost_weight * np.sum(np.square(action), axis=-1)  # [B]


def _hopper_healthy(env, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    low, high = env._healthy_state_range
    state = np.concatenate([qpos, qvel], axis=-1)[:, 2:]  # state_vector()[2:]
    z, angle = qpos[:, 1], qpos[:, 2]
    return (np.all((low < state) & (state < high), axis=-1)
            & (env._healthy_z_range[0] < z) & (z < env._healthy_z_range[1])
            & (env._healthy_angle_range[0] < angle) & (angle < env._healthy_angle_range[1]))


def _walker_healthy(env, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    z, angle = qpos[:, 1], qpos[:, 2]
    return ((env._healthy_z_range[0] < z) & (z < env._healthy_z_range[1])
            & (env._healthy_angle_range[0] < angle) & (angle < env._healthy_angle_range[1]))


def _walking(healthy_fn):
    """Hopper-v5 and Walker2d-v5: forward velocity + healthy reward - control cost; velocities
    clipped to [-10, 10] in the observation; the episode ends when unhealthy."""

    def task(env, before, qpos, qvel, action):
        healthy = healthy_fn(env, qpos, qvel)  # [B] bool
        x_velocity = (qpos[:, 0] - before[:, 0]) / env.dt
        reward = (env._forward_reward_weight * x_velocity + healthy * env._healthy_reward
                  - _ctrl_cost(env, action))
        obs = np.concatenate([_positions(env, qpos, 1), np.clip(qvel, -10, 10)], axis=-1)
        terminal = ~healthy & bool(env._terminate_when_unhealthy)
        return obs, reward, terminal

    return task


def _running(skipped: int):
    """HalfCheetah-v5 (skips x) and Swimmer-v5 (skips x and y): forward velocity - control cost;
    no termination."""

    def task(env, before, qpos, qvel, action):
        x_velocity = (qpos[:, 0] - before[:, 0]) / env.dt
        reward = env._forward_reward_weight * x_velocity - _ctrl_cost(env, action)
        obs = np.concatenate([_positions(env, qpos, skipped), qvel], axis=-1)
        return obs, reward, np.zeros(len(qpos), bool)

    return task


def _inverted_pendulum(env, before, qpos, qvel, action):
    """InvertedPendulum-v5: reward 1 while the pole stays within 0.2 rad, which ends it."""
    obs = np.concatenate([qpos, qvel], axis=-1)
    terminal = ~np.all(np.isfinite(obs), axis=-1) | (np.abs(obs[:, 1]) > 0.2)
    return obs, (~terminal).astype(np.float64), terminal


# gymnasium's module of each supported env class -> its task function.
TASKS = {
    "gymnasium.envs.mujoco.hopper_v5": _walking(_hopper_healthy),
    "gymnasium.envs.mujoco.walker2d_v5": _walking(_walker_healthy),
    "gymnasium.envs.mujoco.half_cheetah_v5": _running(1),
    "gymnasium.envs.mujoco.swimmer_v5": _running(2),
    "gymnasium.envs.mujoco.inverted_pendulum_v5": _inverted_pendulum,
}
SUPPORTED = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Swimmer-v5", "InvertedPendulum-v5")


def check_supported(env: envwrap.Env) -> None:
    """Raise OracleError unless `env` is a task this oracle steps."""
    if type(env.gym_env).__module__ not in TASKS:
        raise OracleError(
            f"policy_config.value_expansion.oracle steps the simulator, but there is no oracle "
            f"for {env.name} here (only {', '.join(SUPPORTED)}); choose one of those or set "
            f"oracle to false."
        )


# -- the oracle ---------------------------------------------------------------------------------


class MujocoOracle:
    """The simulator of one MuJoCo task, stepping batches of stored states (module docstring)."""

    def __init__(self, env_config: dict):
        import mujoco
        import mujoco.rollout

        self._rollout = mujoco.rollout.rollout
        self.env = envwrap.make_env(env_config)
        try:
            check_supported(self.env)
        except OracleError:
            self.env.close()
            raise
        self.gym_env = self.env.gym_env
        self.model = self.gym_env.model
        self.data = mujoco.MjData(self.model)
        self.task = TASKS[type(self.gym_env).__module__]
        self.nq, self.nv = self.model.nq, self.model.nv
        self.state_dims = self.env.state_dims  # nq + nv
        self.obs_dims, self.action_dims = self.env.obs_dims, self.env.action_dims
        self.frame_skip = int(self.gym_env.frame_skip)
        self._spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        # A full physics state of the reset model: time, qpos, qvel (then act, history and
        # plugin state, all empty for the supported tasks); qpos starts at 1, qvel at 1 + nq.
        mujoco.mj_resetData(self.model, self.data)
        self._template = np.empty(mujoco.mj_stateSize(self.model, self._spec))
        mujoco.mj_getState(self.model, self.data, self._template, self._spec)
        if len(self._template) != 1 + self.state_dims:
            raise OracleError(
                f"{self.env.name} has simulator state beyond qpos and qvel (full state "
                f"{len(self._template)} numbers, not {1 + self.state_dims}), which the replay "
                f"buffer does not store; it cannot have an oracle."
            )

    def step(self, state: np.ndarray, action: np.ndarray) -> OracleStep:
        """One env step of B stored states: state [B, state_dims] float64, action
        [B, action_dims] policy actions in [-1, 1] (clipped and scaled as envwrap.Env does)."""
        state = np.asarray(state, np.float64)
        B = state.shape[0]
        scaled = self.env.scale_actions(np.asarray(action, np.float64).reshape(B, -1))
        full = np.tile(self._template, (B, 1))  # [B, 1 + nq + nv]
        full[:, 1:] = state
        control = np.repeat(scaled.astype(np.float64)[:, None, :], self.frame_skip, axis=1)
        out, _ = self._rollout(self.model, self.data, full, control)  # [B, frame_skip, nstate]
        after = out[:, -1, 1 : 1 + self.state_dims]  # [B, nq + nv]
        qpos, qvel = after[:, : self.nq], after[:, self.nq :]
        obs, reward, terminal = self.task(self.gym_env, state[:, : self.nq], qpos, qvel, scaled)
        broken = ~(np.all(np.isfinite(after), axis=-1) & np.all(np.isfinite(obs), axis=-1)
                   & np.isfinite(reward))  # [B]
        if broken.any():
            after = np.where(broken[:, None], 0.0, after)
            obs = np.where(broken[:, None], 0.0, obs)
            reward = np.where(broken, 0.0, reward)
            terminal = terminal | broken
        return OracleStep(np.ascontiguousarray(after), np.asarray(obs, np.float32),
                          np.asarray(reward, np.float64), np.asarray(terminal, np.float32))

    # -- as a world model of ValueRL.rollout (TensorFlow) ----------------------------------------

    def imagine(self, x: Any, a: Any, members: Any, carry: Any) -> tuple[Any, Any, Any, Any]:
        """One imagined step for ValueRL.rollout: x [M, B, obs] (unused: the state is `carry`),
        a [M, B, act], carry [M, B, state_dims] float64 -> x_next [M, B, obs], done [M, B],
        rew [M, 1, B] (one reward "member": the env's own), carry_next [M, B, state_dims]."""
        import tensorflow as tf

        shape = tf.shape(carry)  # [M, B, S]
        flat_state = tf.reshape(carry, [-1, self.state_dims])
        flat_action = tf.reshape(a, [-1, self.action_dims])

        def numpy_step(state, action):
            out = self.step(state, action)
            return (out.next_state, out.next_obs, out.reward.astype(np.float32), out.terminal)

        nxt, obs, rew, done = tf.numpy_function(
            numpy_step, [flat_state, flat_action],
            [tf.float64, tf.float32, tf.float32, tf.float32])
        M, B = shape[0], shape[1]
        carry_next = tf.reshape(nxt, shape)  # [M, B, S]
        x_next = tf.reshape(obs, [M, B, self.obs_dims])  # [M, B, obs]
        done_next = tf.reshape(done, [M, B])  # [M, B]
        rew_next = tf.reshape(rew, [M, 1, B])  # [M, N = 1, B]
        return x_next, done_next, rew_next, carry_next

    def close(self) -> None:
        self.env.close()
