"""The TD3 backbone (docs/BACKBONES.md) against an independent numpy reference.

The reference is written from the math (Fujimoto et al. 2018, and BACKBONES.md for how STEVE's
candidate grid sits on top): target-policy smoothing, the clipped double-Q over cyclic pairs of
target members, the H-step model rollout driven by the smoothed target policy, delayed policy
updates and the Polyak averaging of both target nets. The grid algebra itself (T, mu, sigma2, the
reductions) is np_reference.py's numpy reference, fed the values computed here. Also: several
updates in one call equal one call each, the checkpoint holds the new variables only with TD3,
acting with Gaussian noise agrees between ValueRL and the numpy actor, and the config checks.
Writes only to pytest's temporary folders.
"""

import copy
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import config as config_lib
import valuerl
import worldmodel
from master_runs import counters, run_master
from np_reference import RTOL, np_mlp, np_reference, sigmoid, weights
from process import checkpoint
from process.actors import PolicyActor

TESTS = Path(__file__).resolve().parent

OBS, ACT = 4, 2
TD3 = {"target_noise": 0.3, "target_noise_clip": 0.4, "policy_delay": 2, "tau": 0.1}
STEVE_TD3 = {
    "env": {"obs_dims": OBS, "action_dims": ACT, "reward_scale": 2.0, "discount": 0.9},
    "policy_config": {
        "hidden_dim": 8, "hidden_layers": 3, "learning_rate": 1e-2, "backbone": "td3",
        "td3": TD3,
        "bayesian": {"ensemble_size": 4, "train_sample_count": 4, "eval_sample_count": 3},
        "value_expansion": {"rollout_len": 3, "steve_reweight": True},
    },
    "model_config": {
        "transition_hidden_dim": 8, "transition_layers": 3, "aux_hidden_dim": 8, "aux_layers": 2,
        "bayesian": {
            "transition": {"ensemble_size": 3, "train_sample_count": 3, "eval_sample_count": 2},
            "reward": {"ensemble_size": 3, "train_sample_count": 3, "eval_sample_count": 2},
        },
    },
}
PLAIN_TD3 = {"env": STEVE_TD3["env"], "policy_config": {
    "hidden_dim": 8, "hidden_layers": 3, "learning_rate": 1e-2, "backbone": "td3", "td3": TD3,
    "bayesian": {"ensemble_size": 2, "train_sample_count": 2, "eval_sample_count": 2}}}


def perturb(module, scale, seed):
    rng = np.random.default_rng(seed)
    for v in module.variables:
        v.assign(v + tf.constant(rng.normal(0.0, scale, size=v.shape), tf.float32))


def values(module):
    return [v.numpy().copy() for v in module.variables]


# ------------------------------------------------------------------------------ targets


def np_smoothed(target_policy, x, noise, clip):
    """a = clip(tanh(pi'(x)) + clip(eps, -c, c), -1, 1)."""
    return np.clip(np.tanh(np_mlp(*target_policy, x)) + np.clip(noise, -clip, clip), -1.0, 1.0)


def test_model_free_td3_target_is_r_plus_gamma_min_of_two_critics(make_batch):
    agent = valuerl.ValueRL(PLAIN_TD3, seed=1, jit_compile=False)
    perturb(agent.target_policy, 0.3, 1)  # pi' != pi, so the test sees which one is used
    perturb(agent.target_q, 0.3, 2)  # the two target critics disagree
    batch = make_batch(OBS, ACT, 64)
    out = agent.value_targets(tf.constant(batch.reward), tf.constant(batch.next_obs),
                              tf.constant(batch.terminal), None, agent.draw_members())
    noise = out["target_noise"].numpy()[0, 0]  # [B, act]
    assert np.abs(noise).max() > TD3["target_noise_clip"]  # the clip matters here
    a1 = np_smoothed(weights(agent.target_policy), batch.next_obs, noise, 0.4)
    q_in = np.concatenate([batch.next_obs, a1], -1)
    q1, q2 = (np_mlp(*weights(agent.target_q, e), q_in)[:, 0] for e in (0, 1))
    y = 2.0 * batch.reward + 0.9 * (1.0 - batch.terminal) * np.minimum(q1, q2)
    np.testing.assert_allclose(out["y"][0].numpy(), y, rtol=1e-5, atol=1e-5)
    # both samples of the two-member ensemble are the same min: no Q spread
    V = out["V"].numpy()[0, 0]  # [K, B]
    np.testing.assert_array_equal(V[0], V[1])


def test_target_noise_is_gaussian_with_the_configured_std():
    agent = valuerl.ValueRL(PLAIN_TD3, seed=2, jit_compile=False)
    s1 = np.random.default_rng(0).normal(size=(20000, OBS)).astype(np.float32)
    out = agent.rollout(tf.zeros(20000), tf.constant(s1), tf.zeros(20000), None,
                        agent.draw_members())
    noise = out["target_noise"].numpy().ravel()
    assert abs(noise.std() - TD3["target_noise"]) < 0.01 and abs(noise.mean()) < 0.01


@pytest.mark.parametrize("tdk", [False, True], ids=["steve", "steve_tdk"])
def test_steve_on_td3_targets_match_numpy(tdk):
    config = copy.deepcopy(STEVE_TD3)
    config["policy_config"]["value_expansion"]["tdk_trick"] = tdk
    wm = worldmodel.WorldModel(config, seed=1, jit_compile=False)
    agent = valuerl.ValueRL(config, seed=2, jit_compile=False)
    rng = np.random.default_rng(5)
    perturb(agent.target_policy, 0.3, 3)
    for v in wm.done.b[-1:] + agent.target_q.b:  # non-trivial dones and values
        v.assign(tf.constant(rng.normal(0.0, 1.0, size=v.shape), tf.float32))
    B = 5
    r0 = rng.normal(size=B).astype(np.float32)
    s1 = rng.normal(size=(B, OBS)).astype(np.float32)
    d1 = np.array([1, 0, 0, 1, 0], np.float32)
    tm, rm, qm = [2, 0], [1, 2], [3, 0, 2]
    members = {"transition": tf.constant(tm), "reward": tf.constant(rm), "q": tf.constant(qm)}
    out = agent.value_targets(tf.constant(r0), tf.constant(s1), tf.constant(d1), wm, members)
    noise = out["target_noise"].numpy()  # [H+1, M, B, act]

    H, M, N, K = 3, 2, 2, 3
    rew = np.zeros((H + 1, M, N, B))
    dones = np.zeros((H + 1, M, B))
    V = np.zeros((H + 1, M, K, B))
    acts = np.zeros((H + 1, M, B, ACT))
    for m in range(M):
        x = s1.astype(np.float64)
        rew[0, m], dones[0, m] = r0, d1
        for t in range(H + 1):
            # the smoothed target policy picks a_t: it bootstraps V_t and steps the model
            a = np_smoothed(weights(agent.target_policy), x, noise[t, m], 0.4)
            acts[t, m] = a
            q = [np_mlp(*weights(agent.target_q, e), np.concatenate([x, a], -1))[:, 0]
                 for e in qm]
            for k in range(K):  # cyclic pairs of the drawn members
                V[t, m, k] = np.minimum(q[k], q[(k + 1) % K])
            if t == H:
                break
            x_next = x + np_mlp(*weights(wm.transition, tm[m]), np.concatenate([x, a], -1))
            aux = np.concatenate([x_next, x, a], -1)
            dones[t + 1, m] = sigmoid(np_mlp(*weights(wm.done, tm[m]), aux)[:, 0])
            for n, e in enumerate(rm):
                rew[t + 1, m, n] = np_mlp(*weights(wm.reward, e), aux)[:, 0]
            x = x_next
    np.testing.assert_allclose(out["a"].numpy(), acts, rtol=1e-5, atol=1e-5)
    for key, ref in (("rew", rew), ("dones", dones), ("V", V)):
        np.testing.assert_allclose(out[key].numpy(), ref, rtol=1e-5, atol=1e-5, err_msg=key)
    ve = config["policy_config"]["value_expansion"]
    exact = np_reference(out["rew"].numpy(), out["dones"].numpy(), out["V"].numpy(), 0.9, 2.0, ve)
    ref = np_reference(rew, dones, V, 0.9, 2.0, ve)
    for key in ("T", "mu", "sigma2", "w", "y", "reach"):
        np.testing.assert_allclose(out[key].numpy(), exact[key], rtol=RTOL, atol=1e-9, err_msg=key)
        np.testing.assert_allclose(out[key].numpy(), ref[key], rtol=1e-3, atol=1e-4, err_msg=key)
    # the Q samples' spread is in sigma2: the K = 3 pair minima differ
    assert np.all(out["V"].numpy()[:, :, 0] != out["V"].numpy()[:, :, 1])


# ------------------------------------------------------------------------------ updates


def test_delayed_policy_updates_and_polyak_targets_match_numpy(make_batch):
    # policy_delay 2: Q steps 1, 2, 3, 4; after Q steps 2 and 4 one policy step on the updated Q,
    # then Q' <- tau Q + (1 - tau) Q' and pi' <- tau pi + (1 - tau) pi'.
    agent = valuerl.ValueRL(PLAIN_TD3, seed=3, jit_compile=False)
    batch = make_batch(OBS, ACT, seed=3)
    tau = TD3["tau"]
    for step in range(1, 5):
        q0, p0 = values(agent.q), values(agent.policy)
        tq0, tp0 = values(agent.target_q), values(agent.target_policy)
        policy0 = weights(agent.policy)
        logs = agent.train_step(batch)
        q1, p1 = values(agent.q), values(agent.policy)
        assert all(not np.array_equal(a, b) for a, b in zip(q0, q1, strict=True))
        assert int(agent.q_optimizer.iterations) == step
        assert int(agent.policy_optimizer.iterations) == step // 2
        if step % 2:  # no policy step, targets unchanged
            assert all(np.array_equal(a, b) for a, b in zip(p0, p1, strict=True))
            for a, b in zip(tq0 + tp0, values(agent.target_q) + values(agent.target_policy),
                            strict=True):
                np.testing.assert_array_equal(a, b)
        else:
            assert all(not np.array_equal(a, b) for a, b in zip(p0, p1, strict=True))
            for old, new, net in zip(tq0 + tp0,
                                     values(agent.target_q) + values(agent.target_policy),
                                     q1 + p1, strict=True):
                np.testing.assert_allclose(new, tau * net + (1 - tau) * old, rtol=1e-5,
                                           atol=1e-7)
        # the logged policy loss is the loss at the variables before any policy step of this
        # update, with the updated Q: - mean_b mean_q Q(s, tanh(pi(s))) + 1e-3 mean(pi^2)
        pre = np_mlp(*policy0, batch.obs.astype(np.float64))
        qs = [np_mlp(*weights(agent.q, e), np.concatenate([batch.obs, np.tanh(pre)], -1))[:, 0]
              for e in range(2)]
        expected = -np.mean(np.mean(qs, axis=0)) + 1e-3 * np.mean(pre ** 2)
        assert float(logs["losses/policy"]) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    # the DDPG backbone's epoch copy is not the TD3 backbone's way: the learner skips it
    assert agent.td3 is not None


def test_several_td3_updates_in_one_call_equal_one_call_each(make_batch, stack_batches):
    K = 5  # policy_delay 2: the chunk holds policy steps after updates 2 and 4
    parts = [make_batch(OBS, ACT, seed=20 + k) for k in range(K)]
    stacked = stack_batches(parts)
    config = copy.deepcopy(STEVE_TD3)
    config["policy_config"]["value_expansion"]["tdk_trick"] = True
    results = []
    for chunked in (False, True):
        agent, model = valuerl.ValueRL(config, seed=5), worldmodel.WorldModel(config, seed=5)
        agent.train_step(parts[0], model)  # start mid-cycle: the delay counts across calls
        if chunked:
            logs = {k: np.asarray(v) for k, v in agent.train_steps(stacked, model).items()}
        else:  # scalar logs, and per-horizon vectors (steve/...): the mean over the updates
            each = [agent.train_step(p, model) for p in parts]
            logs = {k: np.mean([np.asarray(e[k]) for e in each], axis=0) for k in each[0]}
        assert int(agent.policy_optimizer.iterations) == 3
        results.append((logs, values(agent)))
    (logs1, agent1), (logs2, agent2) = results
    assert logs1.keys() == logs2.keys() and "losses/policy" in logs1
    for key in logs1:
        np.testing.assert_allclose(logs2[key], logs1[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for a, b in zip(agent1, agent2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ checkpoints


def test_checkpoint_adds_the_target_policy_only_with_td3(tmp_path, make_batch):
    ddpg_config = {"env": STEVE_TD3["env"], "policy_config": {
        "hidden_dim": 8, "hidden_layers": 3,
        "bayesian": {"ensemble_size": 2, "train_sample_count": 2, "eval_sample_count": 2}}}
    ddpg = valuerl.ValueRL(ddpg_config, seed=0)
    td3 = valuerl.ValueRL(PLAIN_TD3, seed=0)
    assert not hasattr(ddpg, "target_policy")

    def keys(agent):
        return set(checkpoint._expected_keys(tf.train.Checkpoint(valuerl=agent)))

    # the DDPG backbone's checkpoint holds what it held before TD3 existed
    assert {k.split("/")[1] for k in keys(ddpg)} == {
        "policy", "q", "target_q", "q_optimizer", "policy_optimizer", "generator"}
    added = keys(td3) - keys(ddpg)
    assert keys(ddpg) <= keys(td3) and len(added) == len(td3.policy.variables)
    assert all(k.startswith("valuerl/target_policy/") for k in added)
    # a TD3 checkpoint restores strictly, target policy included, and training goes on the same
    batch = make_batch(OBS, ACT, seed=7)
    for _ in range(3):
        td3.train_step(batch)
    path = checkpoint.save_checkpoint(str(tmp_path / "policy"), {"valuerl": td3},
                                      {"epoch": 1, "updates": 3, "frames": 10, "hours": 0.0})
    again = valuerl.ValueRL(PLAIN_TD3, seed=9)
    checkpoint.restore_checkpoint(path, {"valuerl": again}, strict=True)
    for a, b in zip(values(td3), values(again), strict=True):
        np.testing.assert_array_equal(a, b)
    td3.train_step(batch)  # the 4th Q step: a delayed policy step, in both
    again.train_step(batch)
    for a, b in zip(values(td3), values(again), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # and a DDPG-backbone checkpoint does not restore into a TD3 agent (strict: pi' missing)
    old = checkpoint.save_checkpoint(str(tmp_path / "ddpg"), {"valuerl": ddpg},
                                     {"epoch": 1, "updates": 0, "frames": 0, "hours": 0.0})
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.restore_checkpoint(old, {"valuerl": valuerl.ValueRL(PLAIN_TD3, seed=0)},
                                      strict=True)


# ------------------------------------------------------------------------------ acting


def test_gaussian_exploration_of_the_actor(tmp_path):
    config = copy.deepcopy(PLAIN_TD3)
    config["policy_config"]["explore_noise"] = 0.1
    agent = valuerl.ValueRL(config, seed=4)
    path = checkpoint.save_checkpoint(str(tmp_path / "policy"), {"valuerl": agent},
                                      {"epoch": 1, "updates": 0, "frames": 0, "hours": 0.0})
    actor = PolicyActor(config, seed=1)
    actor.restore(path)
    obs = np.repeat(np.random.default_rng(0).normal(size=(4, OBS)).astype(np.float32) * 0.1,
                    2000, axis=0)
    greedy = np.tanh(agent.policy(obs).numpy())
    assert np.abs(greedy).max() < 0.7  # away from the bounds: the clip rarely acts
    acted = actor.explore_action(obs, 0.0)
    noise = acted - greedy
    assert acted.dtype == np.float32 and np.all(np.abs(acted) <= 1.0)
    assert np.all(noise != 0.0)  # every dimension of every step
    assert abs(noise.std() - 0.1) < 0.005 and abs(noise.mean()) < 0.005
    big = copy.deepcopy(config)
    big["policy_config"]["explore_noise"] = 5.0
    loud = PolicyActor(big, seed=1)
    loud.restore(path)
    clipped = loud.explore_action(obs[:200], 0.0)
    assert np.all(np.abs(clipped) <= 1.0) and np.mean(np.abs(clipped) == 1.0) > 0.5


# ------------------------------------------------------------------------------ configs


def write(path, obj):
    import json

    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize("updates,message", [
    ({"policy_config": {"backbone": "td3", "td3": False}}, "no policy_config.td3 block"),
    ({"policy_config": {"backbone": "ddpg"}}, "only read with policy_config.backbone"),
    ({"policy_config": {"bayesian": {"ensemble_size": 2, "train_sample_count": 2,
                                     "eval_sample_count": 1}}}, "eval_sample_count"),
    ({"policy_config": {"td3": {"tau": 0.0}}}, r"td3\.tau is 0\.0, but it must be in"),
    ({"policy_config": {"td3": {"policy_delay": 0}}}, "policy_delay is 0"),
    ({"policy_config": {"explore_chance": 0.05}}, "explore_noise .* explore_chance"),
    ({"policy_config": {"explore_noise": -0.1}}, "explore_noise is -0.1"),
    ({"policy_config": {"backbone": "sac"}}, 'must be one of "ddpg", "td3"'),
])
def test_bad_td3_configs_are_refused_with_the_key(tmp_path, updates, message):
    root = TESTS.parent / "config"
    path = write(tmp_path / "bad.json", {
        "inherits": [str(root / "algos/td3.json"), str(root / "envs/hopper.json")],
        "updates": updates})
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.load_config(path)


def test_td3_algorithm_configs():
    root = TESTS.parent / "config"
    td3 = config_lib.load_config(root / "algos/td3.json", complete=False)
    steve_td3 = config_lib.load_config(root / "algos/steve_td3.json", complete=False)
    steve = config_lib.load_config(root / "algos/steve.json", complete=False)
    assert td3["policy_config"]["backbone"] == steve_td3["policy_config"]["backbone"] == "td3"
    assert "model_config" not in td3 and td3["policy_config"]["bayesian"]["ensemble_size"] == 2
    # STEVE on TD3 is STEVE with the backbone's keys changed, nothing else
    changed = {k for k in set(steve_td3["policy_config"]) | set(steve["policy_config"])
               if steve_td3["policy_config"].get(k) != steve["policy_config"].get(k)}
    assert changed == {"backbone", "td3", "explore_chance", "explore_noise", "ensemble_init"}
    assert {k for k in steve_td3["model_config"]
            if steve_td3["model_config"][k] != steve["model_config"][k]} == {"ensemble_init"}


# ------------------------------------------------------------------------------ end to end


def _restored(run, config_path):
    config = config_lib.load_config(config_path)
    agent = valuerl.ValueRL(config, seed=0, jit_compile=False)
    restored = checkpoint.restore_checkpoint(checkpoint.latest_checkpoint(
        str(run / "checkpoints/policy")), {"valuerl": agent}, strict=True)
    return agent, restored


@pytest.mark.slow
def test_tiny_td3_run_and_resume_through_master(tmp_path):
    config_path = TESTS / "configs/tiny_td3.json"
    out = run_master(config_path, 0, "--total-frames", 300, "--output-root", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "InvertedPendulum-v5" / "tiny_td3"
    first = counters(run)
    assert first["updates"] == 300 - 100 and (run / "log/tiny_td3.greedy.csv").read_text()
    agent, restored = _restored(run, config_path)
    assert restored["updates"] == first["updates"]
    # one Q step per update; a policy step (and target update) after every 2nd
    assert int(agent.q_optimizer.iterations) == first["updates"]
    assert int(agent.policy_optimizer.iterations) == first["updates"] // 2
    assert not np.allclose(agent.target_policy.w[0].numpy(), agent.policy.w[0].numpy())
    assert not np.allclose(agent.target_q.w[0].numpy(), agent.q.w[0].numpy())  # Polyak, no copy

    again = run_master(config_path, 0, "--total-frames", 400, "--output-root", tmp_path,
                       "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    second = counters(run)
    assert second["updates"] == 400 - 100 and second["epoch"] > first["epoch"]
    agent, _ = _restored(run, config_path)
    assert int(agent.policy_optimizer.iterations) == second["updates"] // 2


@pytest.mark.slow
def test_tiny_steve_td3_run_through_master(tmp_path):
    config_path = TESTS / "configs/tiny_steve_td3.json"
    out = run_master(config_path, 0, "--total-frames", 300, "--output-root", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "InvertedPendulum-v5" / "tiny_steve_td3"
    assert counters(run)["updates"] == 300 - 100
    assert counters(run, "worldmodel")["updates"] >= 20 + 300 - 100
    log = (run / "log/valuerl.log").read_text()
    assert "charts/average_model_use" in log and "losses/policy" in log
    agent, _ = _restored(run, config_path)
    assert int(agent.policy_optimizer.iterations) == (300 - 100) // 2
