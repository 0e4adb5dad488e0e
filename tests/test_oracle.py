"""The simulator as world model (learning/oracle.py) and the simulator states it needs.

- every supported task: the oracle's step from a stored state equals the env's own step (next
  observation, reward, termination), and its next state is the state the env reached;
- replay rows with states round-trip to float64 precision (hi/lo float32 halves), and a buffer
  without states is still version 1, byte for byte;
- EnvBatch returns the state each step started from and the one it reached, before any reset;
- with the oracle, the j = 0 candidate target equals the learned model's (it uses no model) and
  later candidates are built from the simulator's own rewards;
- configs: the oracle refuses a world model beside it and a task it does not know;
- end to end (slow): a tiny oracle run through master.py starts no world-model learner and
  finishes; a run whose replay was made without states (version 1) resumes.
"""

import json
import shutil

import numpy as np
import pytest

import config as config_lib
import envwrap
import replay
import util
from learning import oracle as mujoco_oracle
from master_runs import ROOT, TESTS, counters, run_master

STEPS = 600  # random-action steps per task: several episodes (and terminations) each


def _random_transitions(name: str, steps: int = STEPS, seed: int = 0):
    """(state, action, next_obs, reward, terminal, next_state) of `steps` env steps under
    random actions, resetting as episodes end."""
    env = envwrap.make_env({"name": name, "max_frames": 1000}, seed=seed)
    rng = np.random.default_rng(seed)
    out = {k: [] for k in ("state", "action", "next_obs", "reward", "terminal", "next_state")}
    env.reset()
    for _ in range(steps):
        action = rng.uniform(-1, 1, env.action_dims)
        out["state"].append(env.sim_state())
        next_obs, reward, terminal, truncated = env.step(action)
        out["next_state"].append(env.sim_state())
        for key, value in (("action", action), ("next_obs", next_obs), ("reward", reward),
                           ("terminal", terminal)):
            out[key].append(value)
        if terminal or truncated:
            env.reset()
    env.close()
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.mark.parametrize("name", mujoco_oracle.SUPPORTED)
def test_oracle_step_is_the_env_step(name):
    real = _random_transitions(name)
    oracle = mujoco_oracle.MujocoOracle({"name": name, "max_frames": 1000})
    out = oracle.step(real["state"], real["action"])
    oracle.close()
    assert out.next_obs.dtype == np.float32 and out.next_obs.shape == real["next_obs"].shape
    np.testing.assert_array_equal(out.terminal, real["terminal"].astype(np.float32))
    # The oracle's state error is round-off (measured over 3,000 steps: 3e-15 on Hopper-v5,
    # 5e-13 on HalfCheetah-v5), except where the env's constraint solver, which starts from its
    # previous step's warm start (the oracle's from zero), stops at its tolerance: 3e-7 on
    # Walker2d-v5, whose feet touch the ground more.
    tol = 1e-6 if name == "Walker2d-v5" else 1e-11
    np.testing.assert_allclose(out.next_state, real["next_state"], rtol=tol, atol=tol)
    np.testing.assert_allclose(out.reward, real["reward"], rtol=tol, atol=tol)
    # next_obs is float32, as the env returns it.
    np.testing.assert_allclose(out.next_obs, real["next_obs"], rtol=1e-6, atol=1e-5)


def test_a_task_without_an_oracle_is_refused_in_one_sentence():
    with pytest.raises(mujoco_oracle.OracleError, match="no oracle for Ant-v5 here"):
        mujoco_oracle.MujocoOracle({"name": "Ant-v5", "max_frames": 1000})


def test_envbatch_returns_the_states_before_and_after_each_step():
    envs = envwrap.EnvBatch({"name": "Hopper-v5", "max_frames": 5}, 2, seed=3)
    assert envs.state_dims == 12  # qpos 6 + qvel 6
    envs.reset()
    before = np.stack([env.sim_state() for env in envs.envs])
    for t in range(5):
        step = envs.step(np.zeros((2, 3)))
        np.testing.assert_array_equal(step.state, before)
        if t < 4:
            after = np.stack([env.sim_state() for env in envs.envs])
            np.testing.assert_array_equal(step.next_state, after)
        before = np.stack([env.sim_state() for env in envs.envs])
    # The 5th step hit max_frames: next_state is the state reached, not the reset one.
    assert len(step.finished) == 2
    assert not np.array_equal(step.next_state, before)
    oracle = mujoco_oracle.MujocoOracle({"name": "Hopper-v5", "max_frames": 5})
    np.testing.assert_allclose(oracle.step(step.state, np.zeros((2, 3))).next_state,
                               step.next_state, rtol=1e-12, atol=1e-12)
    envs.close()


def test_envs_without_mujoco_have_no_state():
    env = envwrap.make_env({"name": "pipeline_stubs:Counting-v0", "max_frames": 10})
    assert env.state_dims == 0 and env.sim_state() is None


# --- the replay buffer's state columns ---------------------------------------------------------


def test_replay_rows_with_states_round_trip(tmp_path):
    real = _random_transitions("Hopper-v5", steps=200)
    n = len(real["state"])
    obs = np.zeros((n, 11), np.float32)
    buf = replay.ReplayBuffer.create(tmp_path / "replay", 11, 3, 1000, state_dims=12)
    buf.append(obs, real["next_obs"], real["action"], real["reward"], real["terminal"],
               real["state"], real["next_state"])
    assert json.loads((tmp_path / "replay/layout.json").read_text())["state_dims"] == 12
    again = replay.ReplayBuffer.open(tmp_path / "replay")
    assert again.state_dims == 12
    batch = again.sample(500, 1000, np.random.default_rng(0))
    assert isinstance(batch, replay.StateBatch) and batch.state.dtype == np.float64
    # Find each sampled row's frame by its action and compare its states to what was appended.
    index = {tuple(a): i for i, a in enumerate(real["action"].astype(np.float32))}
    rows = np.array([index[tuple(a)] for a in batch.action])
    np.testing.assert_allclose(batch.state, real["state"][rows], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(batch.next_state, real["next_state"][rows], rtol=1e-13,
                               atol=1e-13)
    # The stored states replay the stored step: the oracle's state error stays zero.
    out = mujoco_oracle.MujocoOracle({"name": "Hopper-v5", "max_frames": 1000}).step(
        batch.state, batch.action)
    np.testing.assert_allclose(out.next_state, batch.next_state, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out.next_obs, batch.next_obs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.reward, batch.reward, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="give state and next_state both"):
        again.append(obs[:1], obs[:1], real["action"][:1], [0.0], [0.0])
    again.close()
    buf.close()


def test_split_float64_keeps_48_bits():
    x = np.random.default_rng(0).normal(size=(1000, 7)) * 10.0 ** np.arange(-3, 4)
    halves = util.split_float64(x)
    assert halves.dtype == np.float32 and halves.shape == (1000, 14)
    np.testing.assert_allclose(util.join_float64(halves), x, rtol=1e-14, atol=0)


def test_a_buffer_without_states_is_the_old_format(tmp_path):
    buf = replay.ReplayBuffer.create(tmp_path / "replay", 4, 1, 100)
    header = (tmp_path / "replay/header.bin").read_bytes()
    assert int.from_bytes(header[8:16], "little") == replay.VERSION == 1
    assert header[72:] == bytes(len(header) - 72)  # nothing beyond the count
    assert buf.state_dims == 0
    assert replay.required_bytes(4, 1, 100) == replay.required_bytes(4, 1, 100, state_dims=0)
    assert (replay.required_bytes(11, 3, 100, state_dims=12)
            - replay.required_bytes(11, 3, 100)) == (100 + replay.DEFAULT_MARGIN) * 16 * 12
    batch = buf.sample(2, 10, np.random.default_rng(0)) if buf.count else None
    assert batch is None
    buf.append(np.zeros((1, 4)), np.zeros((1, 4)), np.zeros((1, 1)), [1.0], [0.0])
    assert type(buf.sample(2, 10, np.random.default_rng(0))) is replay.Batch
    buf.close()


# --- configs and the value targets -------------------------------------------------------------


def test_the_oracle_config_trains_no_world_model():
    cfg = config_lib.load_config(ROOT / "config/experiments/benchmark/oracle/hopper/"
                                 "steve_td3_oracle.json")
    frozen = config_lib.load_config(ROOT / "config/experiments/benchmark/cpu_win/hopper/"
                                    "steve_td3.json")
    assert config_lib.uses_oracle(cfg) and not config_lib.is_model_based(cfg)
    # Everything else is the frozen steve_td3 config's.
    assert cfg["policy_config"] == dict(
        frozen["policy_config"],
        value_expansion=dict(frozen["policy_config"]["value_expansion"], oracle=True))
    assert cfg["env"] == frozen["env"] and cfg["agent_config"] == frozen["agent_config"]


def test_an_oracle_beside_a_world_model_is_refused(tmp_path):
    path = tmp_path / "both.json"
    path.write_text(json.dumps({
        "inherits": [str(TESTS / "configs/tiny_steve_td3.json")],
        "updates": {"policy_config": {"value_expansion": {"oracle": True}}}}))
    with pytest.raises(config_lib.ConfigError, match="set model_config to false"):
        config_lib.load_config(path)


def _hopper_config(oracle: bool) -> dict:
    path = "config/experiments/benchmark/" + (
        "oracle/hopper/steve_td3_oracle.json" if oracle else "cpu_win/hopper/steve_td3.json")
    cfg = config_lib.load_config(ROOT / path)
    # DDPG's target side (no smoothing noise): the two agents' targets differ only by the model.
    cfg["policy_config"]["backbone"] = "ddpg"
    cfg["policy_config"].pop("td3")
    return cfg


def test_j0_candidate_is_the_same_under_the_learned_model_and_the_oracle():
    import tensorflow as tf

    import valuerl
    import worldmodel

    real = _random_transitions("Hopper-v5", steps=64)
    learned_agent = valuerl.ValueRL(_hopper_config(False), seed=0, jit_compile=False)
    oracle_agent = valuerl.ValueRL(_hopper_config(True), seed=0, jit_compile=False)
    for a, b in zip(learned_agent.target_q.variables, oracle_agent.target_q.variables,
                    strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    model = worldmodel.WorldModel(_hopper_config(False) | {
        "model_config": config_lib.load_config(
            ROOT / "config/experiments/benchmark/cpu_win/hopper/steve_td3.json")["model_config"]},
        seed=0, jit_compile=False)
    oracle = mujoco_oracle.MujocoOracle({"name": "Hopper-v5", "max_frames": 1000})
    r0 = tf.constant(real["reward"], tf.float32)
    s1 = tf.constant(real["next_obs"], tf.float32)
    d1 = tf.constant(real["terminal"], tf.float32)
    q = {"q": tf.constant([0, 1])}
    learned = learned_agent.value_targets(
        r0, s1, d1, model, dict(q, transition=None, reward=None))
    by_oracle = oracle_agent.value_targets(
        r0, s1, d1, oracle, q, tf.constant(real["next_state"], tf.float64))
    assert by_oracle["T"].shape[2:4] == (1, 1)  # M = N = 1: the simulator is one model
    T_learned, T_oracle = learned["T"].numpy(), by_oracle["T"].numpy()
    for m in range(T_learned.shape[2]):
        for n in range(T_learned.shape[3]):
            np.testing.assert_array_equal(T_learned[0, 0, m, n], T_oracle[0, 0, 0, 0])
    # Step 1 of the oracle's rollout is the simulator's step from s1's state under a_0.
    a0 = by_oracle["a"][0, 0].numpy()
    step = oracle.step(real["next_state"], a0)
    np.testing.assert_allclose(by_oracle["x"][1, 0].numpy(), step.next_obs, rtol=1e-6)
    np.testing.assert_allclose(by_oracle["rew"][1, 0, 0].numpy(), step.reward, rtol=1e-6,
                               atol=1e-5)
    np.testing.assert_array_equal(by_oracle["dones"][1, 0].numpy(), step.terminal)


def test_train_step_needs_the_states():
    import valuerl

    agent = valuerl.ValueRL(_hopper_config(True), seed=0, jit_compile=False)
    batch = replay.Batch(*(np.zeros(s, np.float32) for s in ((8, 11), (8, 11), (8, 3), 8, 8)))
    oracle = mujoco_oracle.MujocoOracle({"name": "Hopper-v5", "max_frames": 1000})
    with pytest.raises(ValueError, match="this batch has none"):
        agent.train_step(batch, oracle)


# --- end to end ------------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_oracle_run_has_no_world_model_and_finishes(tmp_path):
    config_path = TESTS / "configs/tiny_steve_td3_oracle.json"
    out = run_master(config_path, 0, "--total-frames", 300, "--output-root", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "worldmodel" not in out.stdout.split("\n")[0]  # the started processes
    run = tmp_path / "InvertedPendulum-v5" / "tiny_steve_td3_oracle"
    assert (run / "state/finished.json").is_file()
    assert not (run / "checkpoints/worldmodel").exists()
    assert counters(run)["updates"] == 300 - 100
    assert json.loads((run / "replay/layout.json").read_text())["state_dims"] == 4
    log = (run / "log/valuerl.log").read_text()
    assert "charts/average_model_use" in log and "steve/horizon_weight/j3" in log


def _to_version_1(folder):
    """Rewrite a version 2 replay buffer as the old format: same frames, no state columns."""
    old = replay.ReplayBuffer.open(folder)
    count, slots, capacity = old.count, old.slots, old.capacity
    od, ad, sd = old.obs_dims, old.action_dims, old.state_dims
    rows = np.array(old._rows[:, : 2 * od + ad + 2])
    old.close()
    shutil.rmtree(folder)
    new = replay.ReplayBuffer.create(folder, od, ad, capacity,
                                     margin=slots - capacity)
    new._rows[:] = rows
    new._publish(count)
    new.close()
    assert sd > 0


@pytest.mark.slow
def test_a_run_whose_replay_has_no_states_resumes(tmp_path):
    config_path = TESTS / "configs/tiny_td3.json"
    out = run_master(config_path, 0, "--total-frames", 200, "--output-root", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "InvertedPendulum-v5" / "tiny_td3"
    _to_version_1(run / "replay")
    again = run_master(config_path, 0, "--total-frames", 300, "--output-root", tmp_path,
                       "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    buf = replay.ReplayBuffer.open(run / "replay")
    assert buf.state_dims == 0 and buf.count == 300
    batch = buf.sample(300, 300, np.random.default_rng(0))
    assert type(batch) is replay.Batch and np.isfinite(batch.obs).all()
    buf.close()
    assert counters(run)["updates"] == 300 - 100


@pytest.mark.slow
def test_the_cost_benchmark_prints_its_ratio():
    # A fresh Python: the script sets TensorFlow's thread count, which a process whose
    # TensorFlow already runs (this one, after other tests) cannot change.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "bench/oracle_speed.py"), "--tasks",
                           "HalfCheetah-v5", "--rounds", "1", "--calls", "1", "--batch", "8"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "rollout, simulator" in out and "model update" in out
    ratio = float(out.split("oracle_update_cost_ratio[HalfCheetah-v5]=")[1].split()[0])
    assert ratio > 0
