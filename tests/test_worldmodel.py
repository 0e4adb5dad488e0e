"""Tests of worldmodel.py: the loss parts against numpy, the loss falling on a fixed batch, seeding,
and an exact rollout of a perfectly known linear system. Writes nothing to disk."""

import types

import numpy as np
import pytest
import tensorflow as tf

import nn
import valuerl
import worldmodel

OBS, ACT = 3, 2


def make_config(transition_hidden=16, transition_layers=3, aux_hidden=8, aux_layers=2):
    return {
        "env": {"obs_dims": OBS, "action_dims": ACT, "reward_scale": 1.0, "discount": 0.9},
        "policy_config": {"hidden_dim": 2 * OBS, "hidden_layers": 2,
                          "value_expansion": {"rollout_len": 4}},
        "model_config": {
            "transition_hidden_dim": transition_hidden, "transition_layers": transition_layers,
            "aux_hidden_dim": aux_hidden, "aux_layers": aux_layers, "learning_rate": 3e-3,
            "weight_decay": 1e-4,
            "bayesian": {
                "transition": {"ensemble_size": 3, "train_sample_count": 3, "eval_sample_count": 2},
                "reward": {"ensemble_size": 2, "train_sample_count": 2, "eval_sample_count": 2},
            },
        },
    }


def make_batch(rng, B=64):
    A = rng.normal(0, 0.3, size=(OBS, OBS))
    Bm = rng.normal(0, 0.3, size=(ACT, OBS))
    obs = rng.normal(size=(B, OBS)).astype(np.float32)
    action = rng.uniform(-1, 1, size=(B, ACT)).astype(np.float32)
    next_obs = (obs @ A + action @ Bm).astype(np.float32)
    reward = (next_obs.sum(-1) - obs[:, 0]).astype(np.float32)
    terminal = (next_obs[:, 0] > 0.8).astype(np.float32)
    return types.SimpleNamespace(obs=obs, action=action, next_obs=next_obs, reward=reward,
                                 terminal=terminal)


def np_member(net, e, x):
    h = x.astype(np.float64)
    for i in range(len(net.w)):
        h = h @ net.w[i].numpy()[e] + net.b[i].numpy()[e, 0]
        if i < len(net.w) - 1:
            h = np.maximum(h, 0.0)
    return h


def test_loss_parts_match_numpy():
    wm = worldmodel.WorldModel(make_config(), seed=0, jit_compile=False)
    rng = np.random.default_rng(0)
    b = make_batch(rng, B=10)
    t_assign = nn.Assignment(tf.constant(rng.permutation(10), tf.int32), tf.constant([1, 2, 0]))
    r_assign = nn.Assignment(tf.constant(rng.permutation(10), tf.int32), tf.constant([1, 0]))
    logs = wm.losses(*(tf.constant(v) for v in (b.obs, b.action, b.reward, b.next_obs,
                                                  b.terminal)), t_assign, r_assign)
    tm = nn.assigned_members(t_assign, 10).numpy()
    rm = nn.assigned_members(r_assign, 10).numpy()
    sa = np.concatenate([b.obs, b.action], -1)
    aux = np.concatenate([b.next_obs, b.obs, b.action], -1)
    delta = np.stack([np_member(wm.transition, tm[i], sa[i:i + 1])[0] for i in range(10)])
    r_hat = np.array([np_member(wm.reward, rm[i], aux[i:i + 1])[0, 0] for i in range(10)])
    logit = np.array([np_member(wm.done, tm[i], aux[i:i + 1])[0, 0] for i in range(10)])
    p = 1 / (1 + np.exp(-logit))
    expected = {
        "wm/transition_loss": np.mean(0.5 * np.sum((b.next_obs - b.obs - delta) ** 2, -1)),
        "wm/reward_loss": np.mean(0.5 * (b.reward - r_hat) ** 2),
        "wm/done_loss": np.mean(-(b.terminal * np.log(p) + (1 - b.terminal) * np.log(1 - p))),
        "wm/l2": 1e-4 * sum(0.5 * np.sum(v.numpy().astype(np.float64) ** 2)
                            for v in wm.trainable_variables),
    }
    expected["wm/total"] = sum(expected.values())
    assert set(logs) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(float(logs[key]), value, rtol=1e-5, err_msg=key)


def test_loss_falls_on_a_fixed_batch_and_seeding_repeats():
    batch = make_batch(np.random.default_rng(1))
    wm = worldmodel.WorldModel(make_config(), seed=3)  # XLA-compiled, as in the learner
    first = {k: float(v) for k, v in wm.train_step(batch).items()}
    for _ in range(300):
        last = {k: float(v) for k, v in wm.train_step(batch).items()}
    assert last["wm/total"] < 0.3 * first["wm/total"], (first, last)
    for key in ("wm/transition_loss", "wm/reward_loss", "wm/done_loss"):
        assert last[key] < first[key], key
    twin = worldmodel.WorldModel(make_config(), seed=3)
    again = {k: float(v) for k, v in twin.train_step(batch).items()}
    assert again == first


def set_linear(net, member, matrix, bias=None):
    """Make a 2-layer ReLU net compute x @ matrix (+ bias) exactly: relu(z) - relu(-z) = z."""
    n_in = matrix.shape[0]
    eye = np.eye(n_in)
    w0, w1 = net.w[0].numpy(), net.w[1].numpy()
    b0, b1 = net.b[0].numpy(), net.b[1].numpy()
    if member is None:  # a plain FeedForward
        net.w[0].assign(np.concatenate([eye, -eye], 1).astype(np.float32))
        net.w[1].assign(np.concatenate([matrix, -matrix], 0).astype(np.float32))
        return
    w0[member] = np.concatenate([eye, -eye], 1)
    w1[member] = np.concatenate([matrix, -matrix], 0)
    b0[member] = 0.0
    b1[member] = 0.0 if bias is None else bias
    for var, value in zip(net.w + net.b, (w0, w1, b0, b1), strict=True):
        var.assign(value)


@pytest.mark.parametrize("members", [[0, 2], [2, 1]])
def test_rollout_of_a_known_linear_system_is_exact(members):
    config = make_config(transition_hidden=2 * (OBS + ACT), transition_layers=2,
                         aux_hidden=2 * (2 * OBS + ACT), aux_layers=2)
    wm = worldmodel.WorldModel(config, seed=0, jit_compile=False)
    agent = valuerl.ValueRL(config, seed=0, jit_compile=False)
    rng = np.random.default_rng(2)
    P = rng.normal(0, 0.5, size=(OBS, ACT))
    set_linear(agent.policy, None, P)
    A, Bm, done_bias = {}, {}, {}
    for m in range(3):
        A[m] = rng.normal(0, 0.4, size=(OBS, OBS))
        Bm[m] = rng.normal(0, 0.4, size=(ACT, OBS))
        set_linear(wm.transition, m, np.concatenate([A[m] - np.eye(OBS), Bm[m]], 0))
        done_bias[m] = -1.0 + m
        set_linear(wm.done, m, np.zeros((2 * OBS + ACT, 1)), bias=done_bias[m])
    rvec = {n: rng.normal(size=(2 * OBS + ACT, 1)) for n in range(2)}
    for n in range(2):
        set_linear(wm.reward, n, rvec[n])
    B, H = 4, 4
    s1 = rng.normal(size=(B, OBS)).astype(np.float32)
    d1 = np.array([0, 1, 0, 0], np.float32)
    r0 = rng.normal(size=B).astype(np.float32)
    out = agent.rollout(tf.constant(r0), tf.constant(s1), tf.constant(d1), wm,
                        {"transition": tf.constant(members), "reward": tf.constant([1, 0]),
                         "q": tf.constant([0])})
    assert out["x"].shape == (H + 1, 2, B, OBS) and out["rew"].shape == (H + 1, 2, 2, B)
    for col, m in enumerate(members):
        x = s1.astype(np.float64)
        for t in range(H + 1):
            a = np.tanh(x @ P)
            np.testing.assert_allclose(out["x"][t, col].numpy(), x, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out["a"][t, col].numpy(), a, rtol=1e-5, atol=1e-6)
            if t == H:
                break
            x_next = x @ A[m] + a @ Bm[m]
            aux = np.concatenate([x_next, x, a], -1)
            np.testing.assert_allclose(out["dones"][t + 1, col].numpy(),
                                       1 / (1 + np.exp(-done_bias[m])), rtol=1e-6)
            for k, n in enumerate([1, 0]):
                np.testing.assert_allclose(out["rew"][t + 1, col, k].numpy(),
                                           (aux @ rvec[n])[:, 0], rtol=1e-5, atol=1e-5)
            x = x_next
        np.testing.assert_allclose(out["dones"][0, col].numpy(), d1)
        np.testing.assert_allclose(out["rew"][0, col, 0].numpy(), r0)


def test_worldmodel_refuses_a_model_free_config():
    config = make_config()
    del config["model_config"]
    with pytest.raises(ValueError, match="model_config"):
        worldmodel.WorldModel(config, seed=0)
