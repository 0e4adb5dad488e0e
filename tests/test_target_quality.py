"""Tests of bench/target_quality.py: the simulator reset from observations, the true values, the
target candidates against a direct computation, and the errors a user can cause. Builds a small
run folder (config, checkpoints of freshly initialised nets, a replay of real InvertedPendulum
frames) under tmp_path instead of training one."""

import json
import math

import gymnasium
import numpy as np
import pytest

import config as config_lib
import replay
import valuerl
import worldmodel
from bench import oracle_candidates
from bench import target_quality as tq
from learning import oracle as mujoco_oracle
from process import checkpoint

TINY_STEVE = "tests/configs/tiny_steve.json"
TINY_DDPG = "tests/configs/tiny_ddpg.json"


def make_run(tmp_path, config_path, frames=400, name="run", states=False, env_name=None):
    """A run folder as master.py leaves it: log/hps.json, policy (and world-model) checkpoints
    and a replay buffer of `frames` real frames taken with random actions (InvertedPendulum-v5,
    or `env_name`); with `states`, the buffer also stores each frame's simulator states."""
    config = config_lib.load_config(config_path)
    if env_name is not None:
        probe = gymnasium.make(env_name)
        config["env"].update(name=env_name, obs_dims=probe.observation_space.shape[0],
                             action_dims=probe.action_space.shape[0])
        probe.close()
    config["seed"] = 3
    run = tmp_path / name
    (run / "log").mkdir(parents=True)
    (run / "log" / "hps.json").write_text(json.dumps(config))
    agent = valuerl.ValueRL(config, seed=3, jit_compile=False)
    counters = {"epoch": 1, "updates": 10, "frames": frames, "hours": 0.0}
    checkpoint.save_checkpoint(str(run / "checkpoints" / "policy"), {"valuerl": agent}, counters)
    if config_lib.is_model_based(config):
        model = worldmodel.WorldModel(config, seed=3, jit_compile=False)
        checkpoint.save_checkpoint(str(run / "checkpoints" / "worldmodel"),
                                   {"worldmodel": model}, counters)
    env = gymnasium.make(config["env"]["name"])
    sim = env.unwrapped
    high = env.action_space.high  # symmetric bounds: a policy action times high
    rng = np.random.default_rng(0)
    rows = []
    obs, _ = env.reset(seed=0)
    for _ in range(frames):
        action = rng.uniform(-1.0, 1.0, size=env.action_space.shape)
        state = np.concatenate([sim.data.qpos, sim.data.qvel])
        next_obs, reward, terminated, truncated, _ = env.step(high * action)
        next_state = np.concatenate([sim.data.qpos, sim.data.qvel])
        rows.append((obs, next_obs, action, reward, float(terminated), state, next_state))
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    e = config["env"]
    buf = replay.ReplayBuffer.create(run / "replay", e["obs_dims"], e["action_dims"], 10_000,
                                     sync=False, state_dims=len(rows[0][5]) if states else 0)
    columns = [np.asarray([r[k] for r in rows], np.float32) for k in range(5)]
    if states:
        columns += [np.asarray([r[k] for r in rows]) for k in (5, 6)]
    buf.append(*columns)
    buf.close()
    return run, config


def test_simulator_reproduces_gymnasium_and_true_values(tmp_path):
    _, config = make_run(tmp_path, TINY_STEVE, frames=10)
    sim = tq.Simulator(config["env"], seed=0)
    # A state reached by gymnasium itself; follow "always push +0.5" there and in the simulator.
    env = gymnasium.make("InvertedPendulum-v5")
    obs, _ = env.reset(seed=5)
    for _ in range(3):
        obs, *_ = env.step(np.array([0.3]))
    start = obs.astype(np.float32)
    gamma, horizon = 0.9, 40
    expected, discount = 0.0, 1.0
    for _ in range(horizon):
        _, reward, terminated, _, _ = env.unwrapped.step(np.array([1.5]))  # 0.5 scaled by 3
        expected += discount * 2.0 * reward
        discount *= gamma
        if terminated:
            break
    env.close()
    oracle = mujoco_oracle.MujocoOracle(config["env"])
    real = oracle_candidates.true_values(
        oracle, lambda o: np.full((len(o), 1), 0.5, np.float32), sim.state_of(start)[None],
        horizon, gamma=gamma, reward_scale=2.0, keep=2)
    assert real["value"][0] == pytest.approx(expected, rel=1e-4)
    assert real["x"].shape == (3, 1, 4) and np.allclose(real["x"][0, 0], start)
    assert sim.observable(start)
    sim.close()


def test_clipped_velocities_are_not_observable():
    config = {"name": "Hopper-v5", "obs_dims": 11, "action_dims": 3, "max_frames": 1000}
    sim = tq.Simulator(config, seed=0)
    assert sim.dropped == 1
    obs = np.zeros(11, np.float32)
    obs[0] = 1.25
    assert sim.observable(obs)
    obs[7] = 10.0  # Hopper-v5 clips velocities at +-10
    assert not sim.observable(obs)
    sim.close()


class _RareStates:
    """A stand-in for Simulator.observable: only states whose cart position is in its top tenth
    count as observable, fewer than the 1 in 4 a single round of draws would find."""

    def __init__(self, cutoff):
        self.cutoff = cutoff

    def observable(self, obs):
        return bool(obs[0] >= self.cutoff)


def test_draws_go_on_until_enough_states_are_observable(tmp_path):
    run, config = make_run(tmp_path, TINY_DDPG)
    with replay.ReplayBuffer.open(run / "replay", sync=False) as buf:
        every = buf.sample(400, 10_000, np.random.default_rng(0))
    both = np.minimum(every.obs[:, 0], every.next_obs[:, 0])
    sim = _RareStates(float(np.quantile(both, 0.9)))
    batch, left_out = tq.draw_transitions(run, config, 16, np.random.default_rng(2), sim, 400)
    assert len(batch.reward) == 16
    assert all(sim.observable(o) and sim.observable(n)
               for o, n in zip(batch.obs, batch.next_obs, strict=True))
    assert left_out > 3 * 16  # more than the first round of 4 x 16 draws could have given
    sim.cutoff = float(both.max()) + 1.0  # nothing is observable: one sentence, with the fix
    with pytest.raises(tq.DiagnosticError, match=r"only 0 of 1024 replayed transitions .* fewer "
                       r"--states"):
        tq.draw_transitions(run, config, 16, np.random.default_rng(2), sim, 400)


def test_candidates_match_a_direct_computation(tmp_path):
    run, config = make_run(tmp_path, TINY_STEVE)
    loaded = tq.load_run(run)
    agent, model = loaded.agent, loaded.model
    with replay.ReplayBuffer.open(run / "replay", sync=False) as buf:
        batch = buf.sample(16, 10_000, np.random.default_rng(1))
    truth = np.zeros(16)
    result = tq.target_errors(agent, model, batch, truth)
    H = config["policy_config"]["value_expansion"]["rollout_len"]
    assert result["H"] == H and len(result["candidates"]) == H + 1
    assert result["samples"] == 64  # 4 transition x 4 reward x 4 Q members
    # j = 0 is r0 + gamma (1 - d1) mean_k Q'_k(s1, tanh(pi(s1))); with y* = 0 its bias is its mean.
    s1 = batch.next_obs
    a1 = np.tanh(agent.policy(s1).numpy())
    q = agent.target_q.members(np.concatenate([s1, a1], -1), None)[..., 0].numpy()  # [K, B]
    ddpg = batch.reward + agent.gamma * (1.0 - batch.terminal) * q.mean(axis=0)
    assert result["candidates"][0]["bias"] == pytest.approx(float(ddpg.mean()), rel=1e-4)
    assert result["candidates"][0]["rmse"] == pytest.approx(
        float(np.sqrt(np.mean(ddpg ** 2))), rel=1e-4)
    for name in tq.REDUCTIONS:
        weights = result["reductions"][name]["weights"]
        assert sum(weights) == pytest.approx(1.0, abs=1e-6), name
    assert result["reductions"]["MVE (j = H)"]["weights"][H] == pytest.approx(1.0)
    assert result["reductions"]["MVE (j = H)"]["bias"] == pytest.approx(
        result["candidates"][H]["bias"], rel=1e-6)


def test_diagnose_a_steve_run_end_to_end(tmp_path):
    run, _ = make_run(tmp_path, TINY_STEVE)
    report = tq.diagnose(run, states=24, horizon=30, seed=0)
    assert report["frames"] == 400 and report["states"] == 24 and report["left_out"] == 0
    assert report["replay_check"]["obs_max"] < 1e-4
    assert report["replay_check"]["reward_max"] < 1e-6
    assert report["cutoff_bound"] == pytest.approx(0.99 ** 30)
    assert [m["t"] for m in report["model"]] == [1, 2, 3]
    assert all(m["alive"] > 0 and math.isfinite(m["state_err"]) for m in report["model"])
    # InvertedPendulum pays 1 per step alive, so a true value is between r0 and 1 + 0.99 + ...
    assert 1.0 <= report["truth_mean"] <= sum(0.99 ** t for t in range(31)) + 1e-6
    text = tq.format_report(report)
    assert "| STEVE |" in text and "| model step t |" in text
    summary = tq.summarise([report, report]).splitlines()
    (row,) = [line for line in summary if "InvertedPendulum" in line]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["InvertedPendulum-v5", "run", "400", "2"]
    assert float(cells[5]) == pytest.approx(report["candidates"][0]["rmse"], abs=0.051)


def test_model_free_run_has_only_the_ddpg_candidate(tmp_path, capsys):
    run, _ = make_run(tmp_path, TINY_DDPG)
    out = tmp_path / "out.json"
    assert tq.main([str(run), "--states", "8", "--horizon", "10", "--json", str(out)]) == 0
    (report,) = json.loads(out.read_text())
    assert [c["j"] for c in report["candidates"]] == [0]
    assert report["reductions"] == {} and "model" not in report
    assert "j = 0 (DDPG" in capsys.readouterr().out


def test_clear_errors(tmp_path, capsys):
    assert tq.main([str(tmp_path), "--states", "8"]) == 2
    assert "is not a run folder or a checkpoint inside one" in capsys.readouterr().err
    with pytest.raises(tq.DiagnosticError, match="joint positions and velocities"):
        tq.Simulator({"name": "Humanoid-v5", "obs_dims": 348, "action_dims": 17,
                      "max_frames": 1000}, seed=0)
    with pytest.raises(tq.DiagnosticError, match="not a MuJoCo environment"):
        tq.Simulator({"name": "BipedalWalker-v3", "obs_dims": 24, "action_dims": 4,
                      "max_frames": 1000}, seed=0)


def test_exact_states_are_replayed_and_walker2d_is_not_refused(tmp_path):
    # Random actions make Walker2d-v5 fall and spin: velocities at its +-10 observation clip,
    # which an observation cannot be set back from, but a stored state can.
    run, config = make_run(tmp_path, TINY_STEVE, frames=300, states=True, env_name="Walker2d-v5")
    report = tq.diagnose(run, states=32, horizon=20, seed=0, horizons=(0, 1, 3, 5))
    assert report["exact_states"] and report["left_out"] == 0
    assert report["replay_check"]["obs_max"] < 1e-4  # the stored state replays the stored step
    assert report["replay_check"]["reward_max"] < 1e-4
    table = report["oracle"]
    assert [r["j"] for r in table["candidates"]] == [0, 1, 2, 3, 4, 5]
    first = table["candidates"][0]
    # j = 0 uses no model: the learned and the oracle candidate are the same number.
    assert first["model_part_rmse"] == pytest.approx(0.0, abs=1e-9)
    assert first["oracle_rmse"] == pytest.approx(first["learned_rmse"], rel=1e-9)
    assert first["oracle_ratio"] == pytest.approx(1.0)
    assert first["learned_rmse"] == pytest.approx(report["candidates"][0]["rmse"], rel=1e-6)
    assert [r["H"] for r in table["by_horizon"]] == [0, 1, 3, 5]
    assert all(math.isfinite(r["oracle_steve_rmse"]) and math.isfinite(r["learned_steve_rmse"])
               for r in table["by_horizon"])
    assert len(table["state_error"]) == 5 and table["state_error"][0] > 0
    # The learned error is the value part plus the model part, so the parts' RMSEs and their
    # cosine give the learned RMSE exactly.
    assert first["model_part_bias"] == pytest.approx(0.0, abs=1e-9)
    for r in table["candidates"][1:]:
        v, m = r["oracle_rmse"], r["model_part_rmse"]
        assert -1 <= r["model_value_cos"] <= 1
        assert r["learned_rmse"] ** 2 == pytest.approx(
            v ** 2 + m ** 2 + 2 * r["model_value_cos"] * v * m, rel=1e-6)
        assert r["learned_bias"] == pytest.approx(r["oracle_bias"] + r["model_part_bias"],
                                                  abs=1e-6)
    assert first["oracle_bias"] == pytest.approx(report["candidates"][0]["bias"], rel=1e-6)
    # median |x| <= sqrt(2) RMSE(x) for any x (Markov's inequality on x^2)
    assert all(0 <= r["model_part_median"] <= math.sqrt(2) * r["model_part_rmse"] + 1e-9
               for r in table["candidates"])
    for key in ("outside", "far"):
        assert sorted(table[key]) == ["learned", "oracle"]
        assert all(len(v) == 5 and all(0 <= x <= 1 for x in v) for v in table[key].values())
    # random actions put some of Walker2d-v5's velocities at the clip, and not all of them
    assert 0 < table["clipped_share"] < 1
    assert all(len(v) == 5 for v in table["far_by_start"].values())
    assert all(f <= o for f, o in zip(table["far"]["learned"], table["outside"]["learned"],
                                                  strict=True))
    text = tq.format_report(report)
    assert "model part RMSE" in text and "| H | STEVE RMSE oracle / learned |" in text
    assert "cos(model, value)" in text and "outside the range of the sampled states" in text
    # the per-step lines start at the first model step (t = 0 is s1 itself, not a step)
    assert "(state error / state variance): t = 1: " in text and "t = 0:" not in text


def test_oracle_candidates_are_the_simulators_own(tmp_path):
    run, config = make_run(tmp_path, TINY_STEVE, frames=200, states=True)
    loaded = tq.load_run(run)
    with replay.ReplayBuffer.open(run / "replay", sync=False) as buf:
        batch = buf.sample(16, 10_000, np.random.default_rng(1))
    oracle = mujoco_oracle.MujocoOracle(config["env"])
    agent = oracle_candidates.agent_at(config, 2, True, str(loaded.policy_path), seed=3)
    out = agent.value_targets(*(tf_const(v) for v in (batch.reward, batch.next_obs,
                                                      batch.terminal)), oracle,
                              {"q": None, "transition": None, "reward": None},
                              tf_const(batch.next_state, "float64"))
    # T[0, 1] = r0 + gamma (1 - d1) (r1 + gamma (1 - d2) V_1), with r1 and d2 the simulator's
    # step from s1's stored state under the rollout's first action.
    a0 = out["a"][0, 0].numpy()
    step = oracle.step(batch.next_state, a0)
    g = agent.gamma
    V1 = out["V"][1, 0].numpy()  # [K, B]
    expect = batch.reward + g * (1 - batch.terminal) * (
        step.reward[None] + g * (1 - step.terminal[None]) * V1)  # [K, B]
    np.testing.assert_allclose(out["T"][0, 1, 0, 0].numpy(), expect, rtol=1e-5, atol=1e-5)
    oracle.close()


def tf_const(value, dtype="float32"):
    import tensorflow as tf

    return tf.constant(value, getattr(tf, dtype))


def test_bad_horizons_are_one_sentence(capsys):
    with pytest.raises(SystemExit):
        tq.parse_args(["run", "--horizons", "1,x"])
    assert "is not a list of whole numbers" in capsys.readouterr().err


def test_td3_smoothing_noise_is_the_same_on_both_sides(tmp_path):
    run, _ = make_run(tmp_path, "tests/configs/tiny_steve_td3.json", frames=200, states=True)
    report = tq.diagnose(run, states=16, horizon=10, seed=0, horizons=(0, 3))
    first = report["oracle"]["candidates"][0]
    # a_0 at s1 is drawn with the same noise on both sides, so j = 0 agrees to the last bit.
    assert first["model_part_rmse"] == 0.0


def test_outside_counts_rollouts_leaving_the_sampled_range():
    states = np.array([[0.0, 0.0], [1.0, 1.0]])  # [B, obs]: the range is [0, 1] per dimension
    x = np.zeros((3, 1, 4, 2))  # [t, M, B, obs]
    x[1, 0] = [[0.5, 0.5], [2.0, 0.0], [0.0, -0.1], [1.0, 1.0]]
    x[2, 0] = [[np.inf, 0.5], [np.nan, 0.0], [0.2, 0.3], [0.0, 0.0]]
    assert oracle_candidates._outside(x, states) == [0.5, 0.5]
    # far outside: beyond the range by more than its width (here 1), so below -1 or above 2
    x[1, 0, 1] = [2.5, 0.0]
    assert oracle_candidates._outside(x, states, margin=1.0) == [0.25, 0.5]


def test_clipped_compares_the_observed_velocities_with_the_state():
    oracle = type("Fake", (), {"nq": 2})()
    states = np.array([[0.0, 0.5, 3.0, 12.0], [0.0, 0.5, 3.0, -4.0]])  # qpos 2, qvel 2
    obs = np.array([[0.5, 3.0, 10.0], [0.5, 3.0, -4.0]])  # qpos[1:], clip(qvel, -10, 10)
    assert oracle_candidates._clipped(oracle, states, obs).tolist() == [True, False]
    # an observation that is not positions then velocities (here 6 numbers) gives None
    assert oracle_candidates._clipped(oracle, states, np.zeros((2, 6))) is None
