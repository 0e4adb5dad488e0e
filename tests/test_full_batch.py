"""`ensemble_batch: "full"`: every ensemble member trains on the whole batch.

The Q loss (with and without the TD-k trick) and the world-model losses against a numpy
computation from the same weights, the config checks, and that one update moves every member.
The default, "split" (2018), is what every other test exercises.
"""

import copy

import numpy as np
import pytest
import tensorflow as tf

import valuerl
import worldmodel
from np_reference import FULL_CONFIG, np_mlp, sigmoid, weights

B = 6


def full_config(tdk: bool) -> dict:
    config = copy.deepcopy(FULL_CONFIG)
    config["policy_config"]["ensemble_batch"] = "full"
    config["policy_config"]["value_expansion"]["tdk_trick"] = tdk
    config["model_config"]["ensemble_batch"] = "full"
    config["model_config"]["bayesian"]["reward"]["train_sample_count"] = 4
    return config


def batch(seed: int = 3):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(B, 4)).astype(np.float32),
            rng.uniform(-1, 1, size=(B, 2)).astype(np.float32),
            rng.normal(size=B).astype(np.float32),
            rng.normal(size=(B, 4)).astype(np.float32),
            np.array([1, 0, 0, 1, 0, 0], np.float32))


@pytest.mark.parametrize("tdk", [False, True])
def test_full_batch_q_loss_matches_numpy(tdk):
    config = full_config(tdk)
    wm = worldmodel.WorldModel(config, seed=1, jit_compile=False)
    agent = valuerl.ValueRL(config, seed=2, jit_compile=False)
    s0, a0, r0, s1, d1 = batch()
    targets = agent.value_targets(tf.constant(r0), tf.constant(s1), tf.constant(d1), wm,
                                  agent.draw_members())
    logs = {}
    loss = float(agent.q_loss(tf.constant(s0), tf.constant(a0), targets, None, logs))

    y = targets["y"].numpy()  # [H+1, B]
    H, E = 3, 3  # rollout length and Q members (M = 2 rollouts)
    x, a = targets["x"].numpy()[:H], targets["a"].numpy()[:H]  # [H, M, B, .]
    reach = targets["reach"].numpy()  # [H+1, B]
    per_member = []
    guesses0 = []
    for e in range(E):
        q_e = weights(agent.q, e)
        g0 = np_mlp(*q_e, np.concatenate([s0, a0], -1).astype(np.float64))[:, 0]  # [B]
        guesses0.append(g0)
        if not tdk:
            per_member.append(np.mean(0.5 * (g0 - y[0]) ** 2))
            continue
        rows = np_mlp(*q_e, np.concatenate([x, a], -1).astype(np.float64))[..., 0]  # [H,M,B]
        guesses = np.concatenate([g0[None], rows.mean(axis=1)], 0)  # [H+1, B]
        per_member.append(np.mean(reach * 0.5 * (guesses - y) ** 2))
    assert loss == pytest.approx(np.mean(per_member), rel=1e-5)
    assert float(logs["charts/mean_q"]) == pytest.approx(np.mean(guesses0), rel=1e-5, abs=1e-6)


def test_full_batch_world_model_losses_match_numpy():
    config = full_config(False)
    wm = worldmodel.WorldModel(config, seed=4, jit_compile=False)
    rng = np.random.default_rng(0)
    for v in wm.done.b[-1:]:  # dones away from 0 and 1, so the cross-entropy matters
        v.assign(tf.constant(rng.normal(0.0, 1.0, size=v.shape), tf.float32))
    s0, a0, r0, s1, d1 = batch(5)
    logs = wm.losses(*(tf.constant(t) for t in (s0, a0, r0, s1, d1)), None, None)
    f64 = np.float64
    trans, reward, done = [], [], []
    aux = np.concatenate([s1, s0, a0], -1).astype(f64)
    for e in range(3):
        delta = np_mlp(*weights(wm.transition, e), np.concatenate([s0, a0], -1).astype(f64))
        trans.append(np.mean(0.5 * np.sum((s1 - (s0 + delta)) ** 2, axis=-1)))
        z = np_mlp(*weights(wm.done, e), aux)[:, 0]
        p = sigmoid(z)
        done.append(np.mean(-(d1 * np.log(p) + (1 - d1) * np.log(1 - p))))
    for e in range(4):
        r_hat = np_mlp(*weights(wm.reward, e), aux)[:, 0]
        reward.append(np.mean(0.5 * (r0 - r_hat) ** 2))
    assert float(logs["wm/transition_loss"]) == pytest.approx(np.mean(trans), rel=1e-5)
    assert float(logs["wm/reward_loss"]) == pytest.approx(np.mean(reward), rel=1e-5)
    assert float(logs["wm/done_loss"]) == pytest.approx(np.mean(done), rel=1e-5)
    parts = sum(float(logs[k]) for k in ("wm/transition_loss", "wm/reward_loss",
                                         "wm/done_loss", "wm/l2"))
    assert float(logs["wm/total"]) == pytest.approx(parts, rel=1e-6)


def test_one_full_batch_update_moves_every_member():
    config = full_config(True)
    wm = worldmodel.WorldModel(config, seed=1)
    agent = valuerl.ValueRL(config, seed=2)
    s0, a0, r0, s1, d1 = batch()
    b = type("Batch", (), {"obs": s0, "action": a0, "reward": r0, "next_obs": s1,
                           "terminal": d1})
    q_before = [w.numpy().copy() for w in agent.q.w]
    wm_before = [w.numpy().copy() for w in wm.transition.w + wm.reward.w + wm.done.w]
    agent.train_step(b, wm)
    wm.train_step(b)
    for before, w in zip(q_before, agent.q.w, strict=True):
        assert all(np.abs(w.numpy()[e] - before[e]).max() > 0 for e in range(3))
    for before, w in zip(wm_before, wm.transition.w + wm.reward.w + wm.done.w, strict=True):
        assert all(np.abs(w.numpy()[e] - before[e]).max() > 0 for e in range(len(before)))


def test_full_batch_needs_every_member_trained():
    config = full_config(False)
    config["policy_config"]["bayesian"]["train_sample_count"] = 2
    with pytest.raises(ValueError, match=r"policy_config.ensemble_batch is \"full\".*"
                                         r"train_sample_count \(2\) is below ensemble_size"):
        valuerl.ValueRL(config, seed=0)
    config = full_config(False)
    config["model_config"]["bayesian"]["reward"]["train_sample_count"] = 2
    with pytest.raises(ValueError, match=r"model_config.bayesian.reward.train_sample_count"):
        worldmodel.WorldModel(config, seed=0)
