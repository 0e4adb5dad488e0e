"""The policy learner's agent: policy, Q ensemble, target Q and the STEVE value targets (TF 2).

Used by the policy learner (`train_step`, `copy_to_target`). The interactors, evaluators and the
visualizer act through process.actors.PolicyActor, which restores only the policy from the
learner's checkpoints (`policy_view`) and acts in numpy: the one implementation of acting. Nothing
here reads or writes files. Importing this module creates no variables.

The value-target code follows docs/algorithm.md section 3 with its symbols. It is split into pure
functions of tensors so that tests can feed them directly:
- `continuation(dones)` -> C, S;
- `candidate_targets(rew, dones, V, ...)` -> the grid T[i, j] for every (m, n, k) sample;
- `target_moments(T)` -> mu, sigma2;
- `reduction_weights(...)` -> w[i, j] for the configured reduction, and `reduce_targets` -> y_i;
- `reach_weights(C)` -> the TD-k row weights.
Rollout layout (time first, then the sample axes, batch last):
  rew   [H+1, M, N, B]   rew_0 = r0 (real), rew_t = rhat_t from reward member n of rollout m
  dones [H+1, M, B]      done_0 = d1 (real), done_t = sigmoid(done_m(x_t, x_{t-1}, a_{t-1}))
  V     [H+1, M, K, B]   V_t = Q'_k(x_t, a_t)
  T     [H+1(i), H+1(j), M, N, K, B]
With `policy_config.backbone: "td3"` (docs/BACKBONES.md) the rollout's actions come from a target
policy pi' with clipped smoothing noise, V_t is the clipped double-Q over cyclic pairs of target
members (`clipped_double_q`), policy steps are delayed and both targets follow by Polyak averaging;
the grid, moments and reductions are the same functions. In ValueRL these differences sit in two
places: the target side (`_target_action`, `_target_value`) and what follows the Q step
(`_after_q_step`).
The target grid is computed in float64 (cheap: at most a few hundred thousand numbers), so that
STEVE's 1 / (sigma2 + 1e-8) and the covariance solve are not limited by float32 round-off.

Config keys read: see learning/settings.py (`Settings`, read once per ValueRL).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

import nn
from learning.settings import Settings, Td3


class _Compiled:
    """Holds compiled functions outside TensorFlow's object tracking (not checkpointed)."""


# ---------------------------------------------------------------------------------------------
# Value targets: pure functions of tensors (docs/algorithm.md section 3)
# ---------------------------------------------------------------------------------------------


def continuation(dones: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """C_t = prod_{j=0..t} (1 - done_j) and S_t = C_{t-1}, S_0 = 1.

    dones [H+1, M, B] -> C [H+1, M, B], S [H+1, M, B].
    """
    C = tf.math.cumprod(1.0 - dones, axis=0)  # [H+1, M, B]
    S = tf.concat([tf.ones_like(C[:1]), C[:-1]], axis=0)  # [H+1, M, B]
    return C, S


def candidate_targets(
    rew: tf.Tensor,
    dones: tf.Tensor,
    V: tf.Tensor,
    gamma: float,
    reward_scale: float,
    epsilon: float = 1e-8,
) -> tf.Tensor:
    """The (H+1) x (H+1) grid of candidate targets, one value per (m, n, k) sample.

    T[i, j] = reward_scale * sum_{t=i..j} gamma^(t-i) (S_t / S_i) rew_t
              + gamma^(j-i+1) (C_j / S_i) V_j,        for j >= i; 0 for j < i.
    rew [H+1, M, N, B], dones [H+1, M, B], V [H+1, M, K, B] -> T [H+1, H+1, M, N, K, B].
    """
    dtype = rew.dtype
    H1 = rew.shape[0]  # H + 1
    C, S = continuation(dones)  # [H+1, M, B] each
    i = np.arange(H1)[:, None, None]  # [H+1, 1, 1]
    j = np.arange(H1)[None, :, None]  # [1, H+1, 1]
    t = np.arange(H1)[None, None, :]  # [1, 1, H+1]
    # D[i, j, t] = gamma^(t-i) on i <= t <= j: the discounts of the rewards summed by T[i, j].
    D = np.where((i <= t) & (t <= j), gamma ** (t - i).astype(np.float64), 0.0)  # [H+1,H+1,H+1]
    # G[i, j] = gamma^(j-i+1) on j >= i: the discount of the bootstrap V_j.
    G = np.where(j[..., 0] >= i[..., 0], gamma ** (j[..., 0] - i[..., 0] + 1.0), 0.0)  # [H+1,H+1]
    D, G = tf.constant(D, dtype), tf.constant(G, dtype)
    inv_S = 1.0 / (S + epsilon)  # [H+1(i), M, B]
    reward_sum = reward_scale * tf.einsum("ijt,tmnb->ijmnb", D, S[:, :, None, :] * rew)
    reward_part = reward_sum * inv_S[:, None, :, None, :]  # [H+1, H+1, M, N, B]
    bootstrap = G[:, :, None, None, None] * (C[:, :, None, :] * V)[None]  # [H+1,H+1,M,K,B]
    bootstrap = bootstrap * inv_S[:, None, :, None, :]  # [H+1, H+1, M, K, B]
    T = reward_part[:, :, :, :, None, :] + bootstrap[:, :, :, None, :, :]  # [H+1,H+1,M,N,K,B]
    return T


def clipped_double_q(V: tf.Tensor, axis: int) -> tf.Tensor:
    """TD3's clipped double-Q over an ensemble's K target members, K >= 2 (docs/BACKBONES.md).

    Sample k is the smaller of members k and k+1 (mod K) of `axis`: K pairs give K samples, so a
    pair of members gives TD3's min(Q'_1, Q'_2) twice, and four give min(Q'_0, Q'_1),
    min(Q'_1, Q'_2), min(Q'_2, Q'_3), min(Q'_3, Q'_0). Shape unchanged.
    """
    return tf.minimum(V, tf.roll(V, shift=-1, axis=axis))


def smoothed_action(pre: tf.Tensor, noise: tf.Tensor, clip: float) -> tf.Tensor:
    """TD3's target-policy smoothing: clip(tanh(pre) + clip(noise, -clip, clip), -1, 1).

    pre: the target policy's pre-tanh output; noise: N(0, sigma^2) draws of the same shape.
    """
    return tf.clip_by_value(tf.tanh(pre) + tf.clip_by_value(noise, -clip, clip), -1.0, 1.0)


def target_samples(T: tf.Tensor) -> tf.Tensor:
    """Flatten the (m, n, k) axes: T [H+1, H+1, M, N, K, B] -> [H+1, H+1, M N K, B]."""
    shape = tf.shape(T)
    return tf.reshape(T, [shape[0], shape[1], -1, shape[-1]])


def target_moments(T: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean and (population) variance over the M*N*K samples.

    T [H+1, H+1, M, N, K, B] -> mu [H+1, H+1, B], sigma2 [H+1, H+1, B].
    """
    samples = target_samples(T)  # [H+1, H+1, MNK, B]
    mu = tf.reduce_mean(samples, axis=2)  # [H+1, H+1, B]
    sigma2 = tf.reduce_mean(tf.square(samples - mu[:, :, None, :]), axis=2)  # [H+1, H+1, B]
    return mu, sigma2


def _upper(H1: int, dtype: tf.DType) -> tf.Tensor:
    """mask[i, j] = 1 on j >= i: [H+1, H+1]."""
    return tf.constant(np.triu(np.ones((H1, H1))), dtype)


def _normalise_rows(w: tf.Tensor) -> tf.Tensor:
    """w [H+1(i), H+1(j), B] -> w / sum_j w."""
    return w / tf.reduce_sum(w, axis=1, keepdims=True)


def reduction_weights(
    T: tf.Tensor,
    mu: tf.Tensor,
    sigma2: tf.Tensor,
    value_expansion: dict | None,
    epsilon: float = 1e-8,
    ridge: float = 1e-3,
) -> tf.Tensor:
    """The weights w[i, j] that reduce row i to y_i = sum_j w[i, j] mu[i, j] (rows sum to 1).

    Checked in docs/algorithm.md's order: mean_k_return, lambda_return, steve_reweight (with
    covariances), else MVE (all weight on j = H); no value_expansion (DDPG, H = 0) is MVE with
    H = 0. lambda_return is on for any number, 0 included (TD(0): w[i, i] = 1), and off only
    when absent or false.
    T [H+1, H+1, M, N, K, B], mu and sigma2 [H+1, H+1, B] -> w [H+1, H+1, B].
    """
    ve = value_expansion or {}
    H1 = mu.shape[0]
    H = H1 - 1
    dtype = mu.dtype
    upper = _upper(H1, dtype)  # [H+1, H+1]
    ones_b = tf.ones_like(mu[:1, :1])  # [1, 1, B]
    if ve.get("mean_k_return"):
        w = upper / tf.reduce_sum(upper, axis=1, keepdims=True)  # [H+1, H+1]
        return w[:, :, None] * ones_b  # [H+1, H+1, B]
    lam = ve.get("lambda_return")
    if lam is not None and lam is not False:  # 0 is TD(0), not "off"
        lam = float(lam)  # Python's 0.0 ** 0 = 1: lambda = 0 puts all weight on j = i
        w = np.zeros((H1, H1))
        for i in range(H1):
            for j in range(i, H):
                w[i, j] = (1.0 - lam) * lam ** (j - i)
            w[i, H] = lam ** (H - i)
        return tf.constant(w, dtype)[:, :, None] * ones_b  # [H+1, H+1, B]
    if ve.get("steve_reweight"):
        if ve.get("covariances"):
            samples = target_samples(T)  # [H+1(i), H+1(j), MNK, B]
            centred = samples - mu[:, :, None, :]  # [H+1, H+1, MNK, B]
            # Sigma_i[j, l] = sum_s centred[i, j, s] centred[i, l, s]: the scatter matrix, NOT
            # divided by the sample count (as 2018 formed it, docs/algorithm.md section 3), so the
            # ridge below is relative to the sum.
            Sigma = tf.einsum("ijsb,ilsb->bijl", centred, centred)  # [B, H+1, H+1, H+1]
            A = Sigma + ridge * tf.eye(H1, dtype=dtype)  # [B, H+1, H+1, H+1]
            rhs = tf.ones_like(A[..., :1])  # [B, H+1, H+1, 1]
            w = tf.linalg.solve(A, rhs)[..., 0]  # [B, H+1(i), H+1(j)]
            w = tf.transpose(w, [1, 2, 0]) * upper[:, :, None]  # [H+1, H+1, B]
            return _normalise_rows(w)
        w = upper[:, :, None] / (sigma2 + epsilon)  # [H+1, H+1, B]
        return _normalise_rows(w)
    w = np.zeros((H1, H1))
    w[:, H] = 1.0
    return tf.constant(w, dtype)[:, :, None] * ones_b  # [H+1, H+1, B]


def reduce_targets(mu: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """y_i = sum_j w[i, j] mu[i, j]: mu, w [H+1, H+1, B] -> y [H+1, B]."""
    return tf.reduce_sum(w * mu, axis=1)


def reach_weights(C: tf.Tensor) -> tf.Tensor:
    """TD-k row weights: 1 for row 0, mean over m of C_{i-1} for row i >= 1.

    C [H+1, M, B] -> reach [H+1, B].
    """
    reach_rows = tf.reduce_mean(C[:-1], axis=1)  # [H, B]
    return tf.concat([tf.ones_like(C[:1, 0]), reach_rows], axis=0)  # [H+1, B]


def average_model_use(w: tf.Tensor) -> tf.Tensor:
    """1 - mean over the batch of w[0, 0]: w [H+1, H+1, B] -> []."""
    return 1.0 - tf.reduce_mean(w[0, 0])


# ---------------------------------------------------------------------------------------------
# The agent
# ---------------------------------------------------------------------------------------------


class ValueRL(tf.Module):
    """Policy pi (pre-tanh output), Q ensemble, target Q', their two Adam optimizers and a
    random generator (member draws, exploration noise), all checkpointed together; with the TD3
    backbone also the target policy pi'.

    The two backbones differ in two places only: the target side of the Q update
    (`_target_action` and `_target_value`: DDPG bootstraps with tanh(pi(x)) and the target
    members Q'_k, TD3 with pi' plus clipped smoothing noise and the clipped double-Q) and what
    follows the Q step (`_after_q_step`: DDPG's simultaneous policy step, TD3's delayed policy
    step and Polyak update). The learner refreshes DDPG's Q' by a hard copy every epoch
    (`copy_to_target`)."""

    def __init__(self, config: dict, seed: int, jit_compile: bool = True):
        super().__init__(name="valuerl")
        self.settings = st = Settings.from_config(config)  # a dataclass: not checkpointed
        # A dict attribute of a tf.Module is a node of the checkpoint's object graph, so this
        # copy stays, first, as it always was: the graph of old and new checkpoints is the same.
        self.value_expansion = dict(st.value_expansion)
        s, a, E = st.obs_dims, st.action_dims, st.q_sizes.ensemble_size
        hidden, layers = st.hidden_dim, st.hidden_layers
        init = tf.random.Generator.from_seed(seed * 7919 + 1)
        self.policy = nn.FeedForward(s, a, hidden, layers, init, name="policy")
        self.q = nn.EnsembleFeedForward(s + a, 1, hidden, layers, E, init, "q", st.ensemble_init)
        self.target_q = nn.EnsembleFeedForward(s + a, 1, hidden, layers, E, init, "target_q",
                                               st.ensemble_init)
        for target, source in zip(self.target_q.variables, self.q.variables, strict=True):
            target.assign(source)
        if st.td3:  # only then: a DDPG checkpoint holds exactly the variables it always held
            self.target_policy = nn.FeedForward(s, a, hidden, layers, init, name="target_policy")
            for target, source in zip(self.target_policy.variables, self.policy.variables,
                                      strict=True):
                target.assign(source)
        self.q_optimizer = nn.Adam(self.q.trainable_variables, st.learning_rate, name="q_adam")
        self.policy_optimizer = nn.Adam(self.policy.trainable_variables, st.learning_rate,
                                        name="policy_adam")
        self.generator = tf.random.Generator.from_seed(seed * 7919 + 4)
        self._compiled = _Compiled()
        self._compiled.train = {}
        # XLA cannot compile the oracle's simulator call (a tf.numpy_function).
        self._jit_compile = jit_compile and not st.oracle

    # The settings other modules read, by their names in docs/algorithm.md and the config.
    @property
    def rollout_len(self) -> int:
        return self.settings.rollout_len

    @property
    def td3(self) -> Td3 | None:
        return self.settings.td3

    @property
    def gamma(self) -> float:
        return self.settings.gamma

    @property
    def _q_in_dims(self) -> int:
        return self.settings.obs_dims + self.settings.action_dims

    def policy_view(self) -> tf.Module:
        """A module whose only checkpointed child is `policy`, under the same path as in a
        ValueRL: restore it as {"valuerl": agent.policy_view()} with strict=False."""
        view = tf.Module(name="policy_view")
        view.policy = self.policy
        return view

    # -- value targets -----------------------------------------------------------------------

    def draw_members(self) -> dict[str, tf.Tensor]:
        """Members for one target computation, drawn without replacement: transition/done [M],
        reward [N], target Q [K]; None for "every member, in order" (see nn.draw_members)."""
        gen = self.generator
        out = {"q": nn.draw_members(gen, *self.settings.q_sizes[::2])}
        if self.rollout_len:
            out["transition"] = nn.draw_members(gen, *self.settings.transition_sizes[::2])
            out["reward"] = nn.draw_members(gen, *self.settings.reward_sizes[::2])
        return out

    def rollout(self, r0: tf.Tensor, s1: tf.Tensor, d1: tf.Tensor, worldmodel: Any,
                members: dict[str, tf.Tensor], s1_state: tf.Tensor | None = None
                ) -> dict[str, tf.Tensor]:
        """Roll the model H steps from s1 (H = 0 without value expansion: DDPG). Each step is
        `worldmodel.imagine`'s: the learned WorldModel's, or with `value_expansion.oracle` the
        simulator's (learning/oracle.py), which starts from s1's state `s1_state` [B, S].

        Returns rew [H+1, M, N, B], dones [H+1, M, B], V [H+1, M, K, B] (float64), and the
        rollout states x [H+1, M, B, obs] and actions a [H+1, M, B, act] (float32).
        With the TD3 backbone (docs/BACKBONES.md) every a_t, the one that steps the model and the
        one V_t bootstraps with, is the target policy's with clipped smoothing noise (the noise is
        returned too, as target_noise [H+1, M, B, act]), and V_t is the clipped double-Q over
        cyclic pairs of the K target members.
        """
        H = self.rollout_len
        q_members = members["q"]  # [K]
        B = tf.shape(s1)[0]
        if H:
            M, N = self.settings.transition_sizes[2], self.settings.reward_sizes[2]
        else:
            M, N = 1, 1
        noises = []  # TD3's smoothing noise of every a_t (_target_action)
        x_t = tf.tile(s1[None], [M, 1, 1])  # x_0 = s1: [M, B, obs]
        xs, acts = [x_t], []
        done_list = [tf.tile(d1[None], [M, 1])]  # done_0 = d1: [M, B]
        rew_list = [tf.tile(r0[None, None], [M, N, 1])]  # rew_0 = r0: [M, N, B]
        # The oracle's simulator state of x_t: [M, B, state_dims] (None for a learned model).
        carry = None if s1_state is None else tf.tile(s1_state[None], [M, 1, 1])
        for _ in range(H):
            a_t = self._target_action(x_t, noises)  # [M, B, act]
            # x_next [M, B, obs], done_next [M, B], rew_next [M, N, B]
            x_next, done_next, rew_next, carry = worldmodel.imagine(x_t, a_t, members, carry)
            acts.append(a_t)
            xs.append(x_next)
            done_list.append(done_next)
            rew_list.append(tf.broadcast_to(rew_next, [M, N, B]))  # the oracle's N is 1
            x_t = x_next
        acts.append(self._target_action(x_t, noises))  # a_H: [M, B, act]
        x = tf.stack(xs)  # [H+1, M, B, obs]
        a = tf.stack(acts)  # [H+1, M, B, act]
        q_in = tf.reshape(tf.concat([x, a], -1), [-1, self._q_in_dims])  # [(H+1) M B, obs + act]
        V = self._target_value(q_in, q_members)  # [K, (H+1) M B]
        V = tf.transpose(tf.reshape(V, [-1, H + 1, M, B]), [1, 2, 0, 3])  # [H+1, M, K, B]
        f64 = tf.float64
        out = {
            "rew": tf.cast(tf.stack(rew_list), f64),  # [H+1, M, N, B]
            "dones": tf.cast(tf.stack(done_list), f64),  # [H+1, M, B]
            "V": tf.cast(V, f64),  # [H+1, M, K, B]
            "x": x,  # [H+1, M, B, obs]
            "a": a,  # [H+1, M, B, act]
        }
        if noises:  # the TD3 backbone
            out["target_noise"] = tf.stack(noises)  # [H+1, M, B, act]
        return out

    # -- the backbones' first difference: the target side (docs/BACKBONES.md) ----------------

    def _target_action(self, x: tf.Tensor, noises: list) -> tf.Tensor:
        """a_t for the rollout state x_t [M, B, obs] -> [M, B, act], the action that steps the
        model and that V_t bootstraps with. DDPG: tanh(pi(x_t)). TD3: the target policy with
        clipped smoothing noise, clip(tanh(pi'(x_t)) + clip(eps, -c, c), -1, 1) with
        eps ~ N(0, target_noise^2), eps appended to `noises`."""
        if not self.td3:
            return tf.tanh(self.policy(x, stop_gradient=True))
        pre = self.target_policy(x, stop_gradient=True)  # pi'(x_t): [M, B, act]
        noises.append(self.td3.target_noise * self.generator.normal(tf.shape(pre)))
        return smoothed_action(pre, noises[-1], self.td3.target_noise_clip)

    def _target_value(self, q_in: tf.Tensor, q_members: tf.Tensor) -> tf.Tensor:
        """The bootstrap values of the K drawn target members on q_in [R, obs + act] -> [K, R].
        DDPG: Q'_k. TD3: the clipped double-Q, min(Q'_k, Q'_{k+1 mod K})."""
        V = self.target_q.members(q_in, q_members, stop_gradient=True)[..., 0]  # [K, R]
        if self.td3:
            V = clipped_double_q(V, axis=0)  # [K, R]
        return V

    def value_targets(
        self,
        r0: tf.Tensor,
        s1: tf.Tensor,
        d1: tf.Tensor,
        worldmodel: Any,
        members: dict[str, tf.Tensor],
        s1_state: tf.Tensor | None = None,
    ) -> dict[str, tf.Tensor]:
        """docs/algorithm.md section 3 end to end: rollout, candidate grid, moments, reduction
        (`s1_state`: the oracle's start, see `rollout`).

        Returns the rollout tensors plus T [H+1, H+1, M, N, K, B], mu, sigma2, w [H+1, H+1, B],
        y [H+1, B] and reach [H+1, B] (float64).
        """
        out = self.rollout(r0, s1, d1, worldmodel, members, s1_state)
        T = candidate_targets(
            out["rew"],
            out["dones"],
            out["V"],
            self.gamma,
            self.settings.reward_scale,
            self.settings.variance_epsilon,
        )  # [H+1, H+1, M, N, K, B]
        mu, sigma2 = target_moments(T)  # [H+1, H+1, B] each
        w = reduction_weights(
            T, mu, sigma2, self.settings.value_expansion, self.settings.variance_epsilon,
            self.settings.covariance_ridge
        )  # [H+1, H+1, B]
        y = reduce_targets(mu, w)  # [H+1, B]
        C, _ = continuation(out["dones"])  # [H+1, M, B]
        out.update(T=T, mu=mu, sigma2=sigma2, w=w, y=y, reach=reach_weights(C))
        return out

    # -- losses (docs/algorithm.md section 4) ------------------------------------------------------

    def q_loss(
        self,
        s0: tf.Tensor,
        a0: tf.Tensor,
        targets: dict[str, tf.Tensor],
        assignment: nn.Assignment | None,
        logs: dict | None = None,
    ) -> tf.Tensor:
        """Mean of reach_i * 0.5 (Q_r(guess_i) - stop_gradient(y_i))^2 over the batch and the
        trained rows (row 0 only without the TD-k trick). With `logs`, also puts the batch mean
        of the row-0 guess Q_r(s0, a0) there as "charts/mean_q"."""
        y = tf.stop_gradient(tf.cast(targets["y"], tf.float32))  # [H+1, B]
        q_in0 = tf.concat([s0, a0], -1)  # [B, obs + act]

        def read(rows: tf.Tensor) -> tf.Tensor:
            """Q of the trained members on `rows` [R', obs + act] -> [P, R']: P = 1, one random
            member per row (`ensemble_batch` "split", 2018), or P = E, every member reading
            every row ("full"; the loss is then also the mean over the members)."""
            if self.settings.q_full_batch:
                return self.q.members(rows)[..., 0]
            return self.q.random(rows, assignment)[None, :, 0]

        if not self.settings.value_expansion.get("tdk_trick"):
            guess0 = read(q_in0)  # [P, B]
            if logs is not None:
                logs["charts/mean_q"] = tf.reduce_mean(guess0)
            return tf.reduce_mean(0.5 * tf.square(guess0 - y[0]))
        H, B = self.rollout_len, tf.shape(s0)[0]
        M = self.settings.transition_sizes.eval_sample_count
        x = tf.stop_gradient(targets["x"][:H])  # x_0..x_{H-1}: [H, M, B, obs]
        a = tf.stop_gradient(targets["a"][:H])  # a_0..a_{H-1}: [H, M, B, act]
        q_in = tf.concat(
            [q_in0, tf.reshape(tf.concat([x, a], -1), [-1, self._q_in_dims])], 0
        )  # [B + H M B, obs + act]
        guess = read(q_in)  # [P, B + H M B]
        guess0 = guess[:, :B]  # [P, B]: Q_r(s0, a0)
        if logs is not None:
            logs["charts/mean_q"] = tf.reduce_mean(guess0)
        guess_rows = tf.reduce_mean(tf.reshape(guess[:, B:], [-1, H, M, B]), axis=2)  # [P, H, B]
        guesses = tf.concat([guess0[:, None], guess_rows], 1)  # [P, H+1, B]
        reach = tf.stop_gradient(tf.cast(targets["reach"], tf.float32))  # [H+1, B]
        return tf.reduce_mean(reach * 0.5 * tf.square(guesses - y))

    def policy_loss(self, s0: tf.Tensor) -> tf.Tensor:
        """- mean_b mean_q Q(s0, tanh(pi(s0))) + pretanh_penalty * mean(pi(s0)^2); no gradient
        reaches Q's variables."""
        pre = self.policy(s0)  # [B, act]
        q = self.q.mean(tf.concat([s0, tf.tanh(pre)], -1), stop_gradient=True)[:, 0]  # [B]
        return -tf.reduce_mean(q) + self.settings.pretanh_penalty * tf.reduce_mean(tf.square(pre))

    def q_assignment(self, s0: tf.Tensor) -> nn.Assignment:
        """The random one-member-per-example read of Q for one Q loss."""
        rows = tf.shape(s0)[0]
        if self.settings.value_expansion.get("tdk_trick"):
            rows = rows * (1 + self.rollout_len * self.settings.transition_sizes.eval_sample_count)
        return nn.random_assignment(
            self.generator, rows, self.settings.q_sizes.ensemble_size,
            self.settings.q_sizes.train_sample_count
        )

    def _train_step(self, s0, a0, r0, s1, d1, worldmodel, update_q, update_policy,
                    s1_state=None):
        logs = {}
        q_grads = (self._q_gradients(s0, a0, r0, s1, d1, worldmodel, logs, s1_state)
                   if update_q else None)
        self._after_q_step(s0, q_grads, update_policy, logs)
        return logs

    def _q_gradients(self, s0, a0, r0, s1, d1, worldmodel, logs: dict, s1_state=None) -> list:
        """The gradient of the Q loss on the STEVE targets (nothing applied yet); the Q loss,
        the mean target and, with value expansion, the horizon weights go to `logs`."""
        targets = self.value_targets(r0, s1, d1, worldmodel, self.draw_members(), s1_state)
        assignment = None if self.settings.q_full_batch else self.q_assignment(s0)
        q_vars = self.q.trainable_variables
        with tf.GradientTape(watch_accessed_variables=False) as q_tape:
            q_tape.watch(q_vars)
            q_loss = self.q_loss(s0, a0, targets, assignment, logs)
        q_grads = q_tape.gradient(q_loss, q_vars)
        logs["losses/q"] = q_loss
        logs["charts/mean_target"] = tf.cast(tf.reduce_mean(targets["y"][0]), tf.float32)
        if self.rollout_len:
            logs["charts/average_model_use"] = tf.cast(
                average_model_use(targets["w"]), tf.float32
            )
            # Batch means of row 0's weights w[0, j] and of its ensembles' spread per
            # horizon j (sigma2 is already computed for the targets): [H+1] each.
            logs["steve/horizon_weight"] = tf.cast(
                tf.reduce_mean(targets["w"][0], axis=-1), tf.float32
            )
            logs["steve/ensemble_std"] = tf.cast(
                tf.reduce_mean(tf.sqrt(targets["sigma2"][0]), axis=-1), tf.float32
            )
        return q_grads

    # -- the backbones' second difference: what follows the Q step (docs/BACKBONES.md) -------

    def _after_q_step(self, s0: tf.Tensor, q_grads: list | None, update_policy: bool,
                      logs: dict) -> None:
        """Apply the Q step (`q_grads`, None for none) and the policy's part. DDPG (and a
        policy step without a Q step): the policy gradient from the same current variables as
        the Q gradient, then both are applied. TD3: the Q step, then, after every d-th Q step,
        a policy step on the updated Q and the Polyak update of Q' and pi'."""
        q_vars = self.q.trainable_variables
        if self.td3 and q_grads is not None and update_policy:
            self.q_optimizer.apply(q_grads, q_vars)
            logs["losses/policy"] = self._delayed_policy_step(s0)
            return
        if update_policy:
            p_vars = self.policy.trainable_variables
            with tf.GradientTape(watch_accessed_variables=False) as p_tape:
                p_tape.watch(p_vars)
                p_loss = self.policy_loss(s0)
            p_grads = p_tape.gradient(p_loss, p_vars)
            logs["losses/policy"] = p_loss
        # Both gradients come from the same current variables; then both are applied.
        if q_grads is not None:
            self.q_optimizer.apply(q_grads, q_vars)
        if update_policy:
            self.policy_optimizer.apply(p_grads, p_vars)

    def _delayed_policy_step(self, s0: tf.Tensor) -> tf.Tensor:
        """TD3's delayed update (docs/BACKBONES.md), after a Q step: when the number of Q steps so
        far (the Q optimizer's step count, checkpointed with it) is a multiple of `policy_delay`,
        one policy step on the updated Q and then the Polyak update of Q' and pi'; otherwise
        nothing. Returns the policy loss at the current variables (for the logs) either way."""

        def step():
            p_vars = self.policy.trainable_variables
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(p_vars)
                p_loss = self.policy_loss(s0)
            self.policy_optimizer.apply(tape.gradient(p_loss, p_vars), p_vars)
            self.polyak_update()
            return p_loss

        due = tf.equal(self.q_optimizer.iterations % self.td3.policy_delay, 0)
        return tf.cond(due, step, lambda: self.policy_loss(s0))

    def polyak_update(self) -> None:
        """TD3's target nets: Q' <- tau Q + (1 - tau) Q' and pi' <- tau pi + (1 - tau) pi'."""
        tau = self.td3.tau
        for target_net, net in ((self.target_q, self.q), (self.target_policy, self.policy)):
            for target, source in zip(target_net.variables, net.variables, strict=True):
                target.assign(tau * source + (1.0 - tau) * target)

    def train_step(
        self,
        batch: Any,
        worldmodel: Any = None,
        update_q: bool = True,
        update_policy: bool = True,
    ) -> dict[str, tf.Tensor]:
        """One Q update and one policy update on one batch (fields obs, action, reward, next_obs,
        terminal), both computed from the same current variables. Model-based configs need
        `worldmodel`. `update_q` / `update_policy` = False skip one of the two (for tests)."""
        if self.rollout_len and worldmodel is None and update_q:
            raise ValueError(
                "this config has policy_config.value_expansion, so train_step needs the world "
                "model: pass worldmodel=WorldModel(...)."
            )
        wm = worldmodel if self.rollout_len and update_q else None
        key = (id(wm), update_q, update_policy)
        fn = self._compiled.train.get(key)
        if fn is None:

            def step(s0, a0, r0, s1, d1, *s1_state):
                return self._train_step(s0, a0, r0, s1, d1, wm, update_q, update_policy,
                                        *s1_state)

            fn = tf.function(step, jit_compile=self._jit_compile)
            self._compiled.train[key] = fn
        return fn(*self._batch_tensors(batch))

    def train_steps(self, batches: Any, worldmodel: Any = None) -> dict[str, tf.Tensor]:
        """K successive `train_step`s in one compiled call, on batches stacked as [K, B, ...]
        (fields obs, action, reward, next_obs, terminal); returns the logs averaged over the K
        updates. Update k sees the variables left by update k - 1, exactly as K calls would; one
        call saves the per-call cost (about a millisecond), which dominates small networks."""
        if self.rollout_len and worldmodel is None:
            raise ValueError(
                "this config has policy_config.value_expansion, so train_steps needs the world "
                "model: pass worldmodel=WorldModel(...)."
            )
        wm = worldmodel if self.rollout_len else None
        key = ("chunk", id(wm))
        fn = self._compiled.train.get(key)
        if fn is None:

            def one(tensors, k):
                s0, a0, r0, s1, d1, *s1_state = (t[k] for t in tensors)
                return self._train_step(s0, a0, r0, s1, d1, wm, True, True, *s1_state)

            fn = tf.function(lambda *tensors: nn.repeat_step(one, tensors),
                             jit_compile=self._jit_compile)
            self._compiled.train[key] = fn
        return fn(*self._batch_tensors(batches))

    def _batch_tensors(self, batch: Any) -> tuple[tf.Tensor, ...]:
        """nn.batch_tensors (s0, a0, r0, s1, d1), and with the oracle also s1's simulator state
        (the batch's `next_state`, float64), where its imagined rollouts start."""
        tensors = nn.batch_tensors(batch)
        if not (self.settings.oracle and self.rollout_len):
            return tensors
        state = getattr(batch, "next_state", None)
        if state is None:
            raise ValueError(
                "policy_config.value_expansion.oracle rolls out from the simulator states stored "
                "in the replay buffer, but this batch has none (a replay made without states, or "
                "a non-MuJoCo env); start a new run of a MuJoCo task."
            )
        return (*tensors, tf.convert_to_tensor(np.asarray(state, np.float64)))

    def copy_to_target(self) -> None:
        """Q' <- Q (hard copy): the DDPG backbone's target, refreshed at every epoch (the TD3
        backbone's targets follow by Polyak averaging instead, see polyak_update)."""
        for target, source in zip(self.target_q.variables, self.q.variables, strict=True):
            target.assign(source)
