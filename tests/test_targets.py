"""Value targets of valuerl.py against an independent numpy implementation of docs/algorithm.md
section 3.

The reference (np_reference.py) is written from the spec with plain loops; it shares no code
with valuerl.py.
The pure target functions are fed random rewards, dones and values; then the full path (a model
rollout through real tiny networks with fixed members) is checked against numpy forward passes of
the same networks' weights. Writes nothing to disk.
"""

import zlib

import numpy as np
import pytest
import tensorflow as tf

import nn
import valuerl
import worldmodel
from np_reference import ATOL, FULL_CONFIG, RTOL, np_mlp, np_reference, sigmoid, weights


def tf_targets(rew, dones, V, gamma, reward_scale, ve):
    T = valuerl.candidate_targets(tf.constant(rew), tf.constant(dones), tf.constant(V), gamma,
                                  reward_scale, 1e-8)
    mu, sigma2 = valuerl.target_moments(T)
    w = valuerl.reduction_weights(T, mu, sigma2, ve, 1e-8, 1e-3)
    y = valuerl.reduce_targets(mu, w)
    C, _ = valuerl.continuation(tf.constant(dones))
    out = {"T": T, "mu": mu, "sigma2": sigma2, "w": w, "y": y,
           "reach": valuerl.reach_weights(C), "average_model_use": valuerl.average_model_use(w)}
    return {k: np.asarray(v) for k, v in out.items()}


VARIANTS = {
    "ddpg": None,
    "mve": {"rollout_len": 3},
    "mve_tdk": {"rollout_len": 3, "tdk_trick": True},
    "mean_k": {"rollout_len": 3, "mean_k_return": True},
    "lambda_0.25": {"rollout_len": 3, "lambda_return": 0.25},
    "lambda_0.75": {"rollout_len": 3, "lambda_return": 0.75},
    "lambda_0": {"rollout_len": 3, "lambda_return": 0},  # TD(0), not "off"
    "lambda_1": {"rollout_len": 3, "lambda_return": 1.0},  # MVE
    "lambda_false": {"rollout_len": 3, "lambda_return": False},  # off: MVE
    "steve": {"rollout_len": 3, "steve_reweight": True},
    "steve_cov": {"rollout_len": 3, "steve_reweight": True, "covariances": True},
}


def random_rollout(rng, H, M, N, K, B):
    rew = rng.normal(size=(H + 1, M, N, B))
    rew[0] = rng.normal(size=B)[None, None, :]  # rew_0 = r0, the same for every sample
    dones = rng.uniform(0.0, 0.6, size=(H + 1, M, B))
    dones[0] = (rng.uniform(size=B) < 0.3).astype(float)[None, :]  # done_0 = d1, real
    dones[0, :, 0] = 1.0  # at least one terminal s1
    dones[0, :, 1] = 0.0
    dones[1:, :, 2] = 1.0  # a certain model termination
    V = rng.normal(5.0, 2.0, size=(H + 1, M, K, B))
    V[0] = V[0, :1]  # V_0 = Q'_k(s1, pi(s1)), the same in every rollout
    return rew, dones, V


@pytest.mark.parametrize("ensembles", [True, False], ids=["ensembles", "single"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_pure_targets_match_numpy(variant, ensembles):
    ve = VARIANTS[variant]
    H = ve["rollout_len"] if ve else 0
    M, N, K = (2, 3, 2) if ensembles else (1, 1, 1)
    if not ve:
        M, N = 1, 1
    rng = np.random.default_rng(zlib.crc32(f"{variant}{ensembles}".encode()))
    rew, dones, V = random_rollout(rng, H, M, N, K, B=6)
    ref = np_reference(rew, dones, V, 0.9, 2.0, ve)
    got = tf_targets(rew, dones, V, 0.9, 2.0, ve)
    for key in ("T", "mu", "sigma2", "w", "y", "reach", "average_model_use"):
        np.testing.assert_allclose(got[key], ref[key], rtol=RTOL, atol=ATOL, err_msg=key)
    # every reduction's weights sum to 1 on every row, and sit on j >= i
    np.testing.assert_allclose(got["w"].sum(axis=1), 1.0, rtol=1e-9)
    assert np.all(got["w"][np.tril_indices(H + 1, -1)] == 0.0)


# w[i, j] = (1 - lambda) lambda^(j - i) for i <= j < H, lambda^(H - i) on j = H; 0^0 = 1.
# (A list, not a dict: 0 == False, so they would be one key.)
HAND_WEIGHTS_H2 = [
    (0, [[1, 0, 0],  # TD(0): each row's own one-step target
         [0, 1, 0],
         [0, 0, 1]]),
    (0.5, [[0.5, 0.25, 0.25],
           [0, 0.5, 0.5],
           [0, 0, 1]]),
    (False, [[0, 0, 1],  # off: MVE
             [0, 0, 1],
             [0, 0, 1]]),
]


@pytest.mark.parametrize("lam, hand", HAND_WEIGHTS_H2, ids=["0", "0.5", "false"])
def test_lambda_return_weights_by_hand(lam, hand):
    """lambda_return 0 is TD(0) (all weight on j = i), not MVE; false is off (MVE): in
    valuerl.py and in the numpy reference alike, against matrices written out by hand (H = 2)."""
    rng = np.random.default_rng(8)
    rew, dones, V = random_rollout(rng, 2, 2, 2, 2, B=4)
    ve = {"rollout_len": 2, "lambda_return": lam}
    expected = np.asarray(hand, np.float64)[:, :, None] * np.ones(4)  # [H+1, H+1, B]
    got = tf_targets(rew, dones, V, 0.9, 1.0, ve)
    ref = np_reference(rew, dones, V, 0.9, 1.0, ve)
    np.testing.assert_array_equal(got["w"], expected)
    np.testing.assert_array_equal(ref["w"], expected)
    if lam is not False and lam == 0:
        np.testing.assert_allclose(got["y"], np.einsum("iib->ib", got["mu"]))  # y_i = mu[i, i]


def test_T00_is_the_ddpg_target():
    rng = np.random.default_rng(3)
    H, M, N, K, B = 3, 2, 2, 3, 7
    rew, dones, V = random_rollout(rng, H, M, N, K, B)
    got = tf_targets(rew, dones, V, 0.99, 1.5, VARIANTS["steve"])
    r0, d1 = rew[0, 0, 0], dones[0, 0]
    ddpg = 1.5 * r0 + 0.99 * (1.0 - d1) * V[0, 0].mean(axis=0)  # [B]
    # equal up to the 1e-8 added to S_0 = 1 in the denominator
    np.testing.assert_allclose(got["mu"][0, 0], ddpg, rtol=1e-7)
    # every sample of T[0, 0] for a given k is the DDPG target of that member
    for k in range(K):
        np.testing.assert_allclose(got["T"][0, 0, 1, 1, k], 1.5 * r0 + 0.99 * (1 - d1) * V[0, 0, k],
                                   rtol=1e-7)
    # the DDPG configuration (H = 0) gives the same y
    ddpg_only = tf_targets(rew[:1, :1, :1], dones[:1, :1], V[:1, :1], 0.99, 1.5, None)
    np.testing.assert_allclose(ddpg_only["y"][0], ddpg, rtol=1e-7)


def test_tiny_variance_candidate_dominates_steve_weights():
    rng = np.random.default_rng(4)
    H1, S, B = 4, 16, 5
    samples = rng.normal(0.0, 3.0, size=(H1, H1, S, B))
    samples[0, 2] = 7.0 + 1e-4 * rng.normal(size=(S, B))  # candidate (0, 2): near-certain
    T = tf.constant(samples.reshape(H1, H1, 4, 4, 1, B))
    mu, sigma2 = valuerl.target_moments(T)
    for ve in (VARIANTS["steve"], VARIANTS["steve_cov"]):
        w = np.asarray(valuerl.reduction_weights(T, mu, sigma2, ve))
        assert np.all(w[0, 2] > 0.99), (ve, w[0, :, 0])
        y = np.asarray(valuerl.reduce_targets(mu, tf.constant(w)))
        np.testing.assert_allclose(y[0], 7.0, atol=0.05)


def test_steve_cov_uses_the_scatter_matrix_with_the_ridge():
    # H = 1, 4 samples (M N K = 4 1 1), one example. Row 0: T[0, 0] = 1 + (d, -d, d, -d) and
    # T[0, 1] = 2 + (e, e, -e, -e), uncorrelated, so the scatter matrix is diag(4 d^2, 4 e^2) and
    # w[0] is proportional to (1 / (4 d^2 + ridge), 1 / (4 e^2 + ridge)). With the covariance
    # (divided by 4) it would be 0.761 instead of 0.887 on j = 0.
    d, e, ridge = 0.01, 0.05, 1e-3
    T = np.zeros((2, 2, 4, 1, 1, 1))
    T[0, 0, :, 0, 0, 0] = 1.0 + d * np.array([1, -1, 1, -1])
    T[0, 1, :, 0, 0, 0] = 2.0 + e * np.array([1, 1, -1, -1])
    T[1, 1, :, 0, 0, 0] = 3.0 + e * np.array([1, -1, 1, -1])
    T = tf.constant(T)
    mu, sigma2 = valuerl.target_moments(T)
    w = np.asarray(valuerl.reduction_weights(T, mu, sigma2, VARIANTS["steve_cov"], 1e-8, ridge))
    inv = np.array([1.0 / (4 * d * d + ridge), 1.0 / (4 * e * e + ridge)])
    np.testing.assert_allclose(w[0, :, 0], inv / inv.sum(), rtol=1e-9)
    assert w[0, 0, 0] == pytest.approx(0.8871, abs=1e-4)
    np.testing.assert_allclose(w[1, :, 0], [0.0, 1.0])


# ------------------------------------------------------------------------------ full path


@pytest.mark.parametrize("reduction", ["steve", "steve_cov", "lambda_0.75", "mve_tdk"])
def test_full_path_through_real_nets_matches_numpy(reduction):
    config = {**FULL_CONFIG, "policy_config": {**FULL_CONFIG["policy_config"],
                                               "value_expansion": VARIANTS[reduction]}}
    wm = worldmodel.WorldModel(config, seed=1, jit_compile=False)
    agent = valuerl.ValueRL(config, seed=2, jit_compile=False)
    rng = np.random.default_rng(5)
    for v in wm.done.b[-1:] + agent.target_q.b:  # non-trivial dones and values
        v.assign(tf.constant(rng.normal(0.0, 1.0, size=v.shape), tf.float32))
    B = 5
    s0 = rng.normal(size=(B, 4)).astype(np.float32)
    a0 = rng.uniform(-1, 1, size=(B, 2)).astype(np.float32)
    r0 = rng.normal(size=B).astype(np.float32)
    s1 = rng.normal(size=(B, 4)).astype(np.float32)
    d1 = np.array([1, 0, 0, 1, 0], np.float32)
    members = {"transition": tf.constant([2, 0]), "reward": tf.constant([3, 1, 2]),
               "q": tf.constant([1, 2])}
    out = agent.value_targets(tf.constant(r0), tf.constant(s1), tf.constant(d1), wm, members)

    # numpy rollout from the same weights
    H, M, N, K = 3, 2, 3, 2
    pw = weights(agent.policy)
    rew = np.zeros((H + 1, M, N, B))
    dones = np.zeros((H + 1, M, B))
    V = np.zeros((H + 1, M, K, B))
    xs = np.zeros((H + 1, M, B, 4))
    for m, tm in enumerate([2, 0]):
        x = s1.astype(np.float64)
        rew[0, m] = r0
        dones[0, m] = d1
        for t in range(H + 1):
            a = np.tanh(np_mlp(*pw, x))
            xs[t, m] = x
            for k, q in enumerate([1, 2]):
                V[t, m, k] = np_mlp(*weights(agent.target_q, q), np.concatenate([x, a], -1))[:, 0]
            if t == H:
                break
            x_next = x + np_mlp(*weights(wm.transition, tm), np.concatenate([x, a], -1))
            aux = np.concatenate([x_next, x, a], -1)
            dones[t + 1, m] = sigmoid(np_mlp(*weights(wm.done, tm), aux)[:, 0])
            for n, rm in enumerate([3, 1, 2]):
                rew[t + 1, m, n] = np_mlp(*weights(wm.reward, rm), aux)[:, 0]
            x = x_next
    assert 0.05 < dones[1:].mean() < 0.95  # the model's dones matter here
    ve = config["policy_config"]["value_expansion"]
    ref = np_reference(rew, dones, V, 0.9, 2.0, ve)
    np.testing.assert_allclose(out["x"].numpy(), xs, rtol=1e-5, atol=1e-5)
    for key, got in (("rew", out["rew"]), ("dones", out["dones"]), ("V", out["V"])):
        np.testing.assert_allclose(got.numpy(), locals()[key], rtol=1e-5, atol=1e-5, err_msg=key)
    # float32 nets, so the inputs agree to ~1e-6; the target algebra itself is checked at 1e-5
    # relative on those fetched outputs, then loosely against the numpy-net outputs.
    exact = np_reference(out["rew"].numpy(), out["dones"].numpy(), out["V"].numpy(), 0.9, 2.0, ve)
    for key in ("T", "mu", "w", "y", "reach"):
        np.testing.assert_allclose(out[key].numpy(), exact[key], rtol=RTOL, atol=ATOL, err_msg=key)
        np.testing.assert_allclose(out[key].numpy(), ref[key], rtol=1e-3, atol=1e-4, err_msg=key)
    np.testing.assert_allclose(float(valuerl.average_model_use(out["w"])),
                               exact["average_model_use"], rtol=RTOL)

    # the Q loss (TD-k: every row, reach-weighted) with a fixed one-member-per-example assignment
    tdk = bool(ve.get("tdk_trick"))
    rows = B * (1 + H * M) if tdk else B
    assignment = nn.Assignment(tf.constant(rng.permutation(rows), tf.int32), tf.constant([2, 0, 1]))
    loss = float(agent.q_loss(tf.constant(s0), tf.constant(a0), out, assignment))
    used = nn.assigned_members(assignment, rows).numpy()
    a_roll = out["a"].numpy().astype(np.float64)
    q_in = np.concatenate([np.concatenate([s0, a0], -1).astype(np.float64),
                           np.concatenate([out["x"].numpy(), a_roll], -1)[:H].reshape(-1, 6)])
    guess = np.array([np_mlp(*weights(agent.q, used[r]), q_in[r:r + 1])[0, 0] for r in range(rows)])
    if tdk:
        guesses = np.concatenate([guess[:B][None], guess[B:].reshape(H, M, B).mean(axis=1)])
        expected = np.mean(exact["reach"] * 0.5 * (guesses - exact["y"]) ** 2)
    else:
        expected = np.mean(0.5 * (guess - exact["y"][0]) ** 2)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
