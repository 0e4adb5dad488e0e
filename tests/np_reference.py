"""An independent numpy implementation of docs/algorithm.md section 3, and numpy forward passes of
the nets.

Written from the spec with plain loops; it shares no code with valuerl.py, worldmodel.py or nn.py.
The target tests (test_targets.py, test_td3.py, test_full_batch.py, test_nn.py) check the
TensorFlow code against it. `FULL_CONFIG` is the tiny STEVE config whose real networks those
full-path checks run.
"""

import numpy as np

RTOL = 1e-5
ATOL = 1e-9


def np_reference(rew, dones, V, gamma, reward_scale, ve, eps=1e-8, ridge=1e-3):
    """rew [H+1, M, N, B], dones [H+1, M, B], V [H+1, M, K, B] -> dict of T, mu, sigma2, w, y,
    reach (T [H+1, H+1, M, N, K, B]; mu, sigma2, w [H+1, H+1, B]; y, reach [H+1, B])."""
    ve = ve or {}
    H1, M, N, B = rew.shape
    K = V.shape[2]
    H = H1 - 1
    T = np.zeros((H1, H1, M, N, K, B))
    C = np.zeros((H1, M, B))
    for m in range(M):
        for b in range(B):
            c, s = [], []
            running = 1.0
            for t in range(H1):
                s.append(running)  # S_t = C_{t-1}, S_0 = 1
                running *= 1.0 - dones[t, m, b]
                c.append(running)  # C_t = prod_{j<=t} (1 - done_j)
            C[:, m, b] = c
            for n in range(N):
                for k in range(K):
                    for i in range(H1):
                        for j in range(i, H1):
                            total = 0.0
                            for t in range(i, j + 1):
                                total += gamma ** (t - i) * s[t] / (s[i] + eps) * rew[t, m, n, b]
                            total *= reward_scale
                            total += gamma ** (j - i + 1) * c[j] / (s[i] + eps) * V[j, m, k, b]
                            T[i, j, m, n, k, b] = total
    samples = T.reshape(H1, H1, M * N * K, B)
    mu = samples.mean(axis=2)
    sigma2 = samples.var(axis=2)
    w = np.zeros((H1, H1, B))
    for b in range(B):
        for i in range(H1):
            if ve.get("mean_k_return"):
                w[i, i:, b] = 1.0 / (H1 - i)
            elif ve.get("lambda_return") is not None and ve.get("lambda_return") is not False:
                lam = ve["lambda_return"]  # 0 is TD(0) (0 ** 0 = 1 on j = i), false is off
                for j in range(i, H):
                    w[i, j, b] = (1 - lam) * lam ** (j - i)
                w[i, H, b] = lam ** (H - i)
            elif ve.get("steve_reweight"):
                if ve.get("covariances"):
                    # docs/algorithm.md: Sigma_i = SUM over the samples of (T - mu)(T - mu)^T (the
                    # scatter matrix, not divided by the count), as a loop of outer products.
                    Sigma = np.zeros((H1, H1))
                    for sample in range(M * N * K):
                        d = samples[i, :, sample, b] - mu[i, :, b]  # [H+1(j)]
                        Sigma += np.outer(d, d)
                    sol = np.linalg.solve(Sigma + ridge * np.eye(H1), np.ones(H1))
                    sol[:i] = 0.0
                    w[i, :, b] = sol / sol.sum()
                else:
                    inv = np.array([1.0 / (sigma2[i, j, b] + eps) if j >= i else 0.0
                                    for j in range(H1)])
                    w[i, :, b] = inv / inv.sum()
            else:
                w[i, H, b] = 1.0
    y = (w * mu).sum(axis=1)
    reach = np.ones((H1, B))
    for i in range(1, H1):
        reach[i] = C[i - 1].mean(axis=0)
    return {"T": T, "mu": mu, "sigma2": sigma2, "w": w, "y": y, "reach": reach,
            "average_model_use": 1.0 - w[0, 0].mean()}


def np_mlp(weights, biases, x):
    h = x
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = h @ w + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0.0)
    return h


def weights(net, e=None):
    """A net's weights and biases as float64 arrays: the whole stack, or ensemble member e's."""
    ws = [w.numpy().astype(np.float64) for w in net.w]
    bs = [b.numpy().astype(np.float64) for b in net.b]
    if e is None:
        return ws, bs
    return [w[e] for w in ws], [b[e, 0] for b in bs]


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


FULL_CONFIG = {
    "env": {"obs_dims": 4, "action_dims": 2, "reward_scale": 2.0, "discount": 0.9},
    "policy_config": {
        "hidden_dim": 8, "hidden_layers": 3, "learning_rate": 3e-4,
        "bayesian": {"ensemble_size": 3, "train_sample_count": 3, "eval_sample_count": 2},
        "value_expansion": {"rollout_len": 3, "steve_reweight": True, "tdk_trick": True},
    },
    "model_config": {
        "transition_hidden_dim": 8, "transition_layers": 3, "aux_hidden_dim": 8, "aux_layers": 2,
        "bayesian": {
            "transition": {"ensemble_size": 3, "train_sample_count": 3, "eval_sample_count": 2},
            "reward": {"ensemble_size": 4, "train_sample_count": 2, "eval_sample_count": 3},
        },
    },
}
