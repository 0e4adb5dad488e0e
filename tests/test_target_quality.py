"""Tests of bench/target_quality.py: the simulator reset from observations, the true values, the
target candidates against a direct computation, and the errors a user can cause. Builds a small
run folder (config, checkpoints of freshly initialised nets, a replay of real InvertedPendulum
frames) under tmp_path instead of training one."""

import json
import math

import gymnasium
import numpy as np
import pytest

import checkpoint
import config as config_lib
import replay
import valuerl
import worldmodel
from bench import target_quality as tq

TINY_STEVE = "tests/configs/tiny_steve.json"
TINY_DDPG = "tests/configs/tiny_ddpg.json"


def make_run(tmp_path, config_path, frames=400, name="run"):
    """A run folder as master.py leaves it: log/hps.json, policy (and world-model) checkpoints
    and a replay buffer of `frames` real frames taken with random actions."""
    config = config_lib.load_config(config_path)
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
    env = gymnasium.make("InvertedPendulum-v5")
    rng = np.random.default_rng(0)
    rows = []
    obs, _ = env.reset(seed=0)
    for _ in range(frames):
        action = rng.uniform(-1.0, 1.0, size=1)
        next_obs, reward, terminated, truncated, _ = env.step(3.0 * action)  # bounds +-3
        rows.append((obs, next_obs, action, reward, float(terminated)))
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    buf = replay.ReplayBuffer.create(run / "replay", 4, 1, 10_000, sync=False)
    columns = [np.asarray([r[k] for r in rows], np.float32) for k in range(5)]
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
    real = tq.real_rollouts(sim, lambda o: np.full((1, 1), 0.5, np.float32), start[None],
                            horizon, keep=2, gamma=gamma, reward_scale=2.0)
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
    _, _, agent, model, _, _ = tq.load_run(run)
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
