"""The learned world model of STEVE: transition, done and reward ensembles (TensorFlow 2).

Trained by the world-model learner process (`train_step`, docs/algorithm.md section 2); read by the
policy learner, which restores it from the world-model learner's checkpoints and rolls it forward to
build value targets (`step`, `rewards`, docs/algorithm.md section 3). Nothing here reads or writes
files: checkpointing is `process/checkpoint.py`'s job. Importing this module creates no variables.

Config keys read: `env.obs_dims`, `env.action_dims`, and under `model_config`:
`transition_hidden_dim`, `transition_layers`, `aux_hidden_dim`, `aux_layers`, `ensemble_init`,
`ensemble_batch`, `learning_rate`, `weight_decay`, `bayesian.transition`, `bayesian.reward`
(absent -> one member each).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

import nn


class _Compiled:
    """Holds compiled functions outside TensorFlow's object tracking (not checkpointed)."""


class WorldModel(tf.Module):
    """Transition f (delta s), done logit and reward ensembles, with their Adam optimizer.

    The done net has the transition ensemble's size and is always read with the transition's
    members (in training: the same one-member-per-example assignment; in rollouts: member m).
    """

    def __init__(self, config: dict, seed: int, jit_compile: bool = True):
        super().__init__(name="worldmodel")
        model = config.get("model_config")
        if not model:
            raise ValueError(
                "WorldModel needs a config with a model_config block; this config is model-free."
            )
        env = config["env"]
        self.obs_dims, self.action_dims = int(env["obs_dims"]), int(env["action_dims"])
        bayes = model.get("bayesian") or {}
        self.transition_sizes = nn.ensemble_sizes(
            bayes.get("transition"), "model_config.bayesian.transition"
        )
        self.reward_sizes = nn.ensemble_sizes(bayes.get("reward"), "model_config.bayesian.reward")
        self.weight_decay = float(model.get("weight_decay", 1e-4))
        init = tf.random.Generator.from_seed(seed * 7919 + 2)
        ens_init = str(model.get("ensemble_init", "stacked"))
        self.full_batch = str(model.get("ensemble_batch") or "split") == "full"
        for sizes, where in ((self.transition_sizes, "transition"), (self.reward_sizes, "reward")):
            if self.full_batch and sizes.train_sample_count != sizes.ensemble_size:
                raise ValueError(
                    f"model_config.ensemble_batch is \"full\" (every member trains on the whole "
                    f"batch), but model_config.bayesian.{where}.train_sample_count "
                    f"({sizes.train_sample_count}) is below its ensemble_size "
                    f"({sizes.ensemble_size}); set them equal or use \"split\"."
                )
        s, a = self.obs_dims, self.action_dims
        self.transition = nn.EnsembleFeedForward(
            s + a,
            s,
            int(model.get("transition_hidden_dim", 512)),
            int(model.get("transition_layers", 8)),
            self.transition_sizes.ensemble_size,
            init,
            name="transition",
            init=ens_init,
        )
        aux_dim, aux_layers = int(model.get("aux_hidden_dim", 128)), int(model.get("aux_layers", 4))
        t_size = self.transition_sizes.ensemble_size
        self.done = nn.EnsembleFeedForward(
            2 * s + a, 1, aux_dim, aux_layers, t_size, init, name="done", init=ens_init
        )
        self.reward = nn.EnsembleFeedForward(
            2 * s + a, 1, aux_dim, aux_layers, self.reward_sizes.ensemble_size, init,
            name="reward", init=ens_init,
        )
        self.optimizer = nn.Adam(
            self.trainable_variables, float(model.get("learning_rate", 3e-4)), name="wm_adam"
        )
        self.generator = tf.random.Generator.from_seed(seed * 7919 + 3)
        self._compiled = _Compiled()
        self._compiled.train = tf.function(self._train_step, jit_compile=jit_compile)
        self._jit_compile = jit_compile

    # -- training (docs/algorithm.md section 2) ----------------------------------------------------

    def losses(
        self,
        s0: tf.Tensor,
        a0: tf.Tensor,
        r0: tf.Tensor,
        s1: tf.Tensor,
        d1: tf.Tensor,
        transition_assignment: nn.Assignment | None,
        reward_assignment: nn.Assignment | None,
    ) -> dict[str, tf.Tensor]:
        """The world-model loss and its parts, each a scalar; `total` is what is minimised.
        With `ensemble_batch: "full"` the assignments are None: every member reads every
        example, and each part is the mean over the members and the batch."""
        sa = tf.concat([s0, a0], -1)  # [B, obs + act]
        aux_in = tf.concat([s1, s0, a0], -1)  # [B, 2 obs + act], with the REAL s1
        labels = d1  # [B]
        if self.full_batch:  # every member reads every example: a leading member axis E
            delta = self.transition.members(sa)  # [E, B, obs]
            r_hat = self.reward.members(aux_in)[..., 0]  # [E_r, B]
            done_logit = self.done.members(aux_in)[..., 0]  # [E, B]
            labels = tf.broadcast_to(d1, tf.shape(done_logit))  # [E, B]
        else:
            delta = self.transition.random(sa, transition_assignment)  # [B, obs]
            r_hat = self.reward.random(aux_in, reward_assignment)[:, 0]  # [B]
            done_logit = self.done.random(aux_in, transition_assignment)[:, 0]  # [B]
        # Each mean runs over the batch (and the members, with "full").
        transition_loss = tf.reduce_mean(
            0.5 * tf.reduce_sum(tf.square(s1 - (s0 + delta)), axis=-1)
        )  # []
        reward_loss = tf.reduce_mean(0.5 * tf.square(r0 - r_hat))  # []
        done_loss = tf.reduce_mean(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=done_logit)
        )  # []
        l2 = self.weight_decay * (self.transition.l2() + self.done.l2() + self.reward.l2())  # []
        total = transition_loss + reward_loss + done_loss + l2
        return {
            "wm/transition_loss": transition_loss,
            "wm/reward_loss": reward_loss,
            "wm/done_loss": done_loss,
            "wm/l2": l2,
            "wm/total": total,
        }

    def _train_step(self, s0, a0, r0, s1, d1):
        batch = tf.shape(s0)[0]
        t_assign = r_assign = None  # "full": every member reads every example
        if not self.full_batch:
            t_assign = nn.random_assignment(
                self.generator,
                batch,
                self.transition_sizes.ensemble_size,
                self.transition_sizes.train_sample_count,
            )
            r_assign = nn.random_assignment(
                self.generator,
                batch,
                self.reward_sizes.ensemble_size,
                self.reward_sizes.train_sample_count,
            )
        variables = self.trainable_variables
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(variables)
            logs = self.losses(s0, a0, r0, s1, d1, t_assign, r_assign)
        grads = tape.gradient(logs["wm/total"], variables)
        self.optimizer.apply(grads, variables)
        return logs

    def train_step(self, batch: Any) -> dict[str, tf.Tensor]:
        """One Adam step on a batch with fields obs, action, reward, next_obs, terminal."""
        s0, a0, r0, s1, d1 = nn.batch_tensors(batch)
        return self._compiled.train(s0, a0, r0, s1, d1)

    def train_steps(self, batches: Any) -> dict[str, tf.Tensor]:
        """K successive `train_step`s in one compiled call, on batches stacked as [K, B, ...];
        returns the logs averaged over the K updates (see ValueRL.train_steps)."""
        if not hasattr(self._compiled, "train_chunk"):

            def one(tensors, k):
                return self._train_step(*(t[k] for t in tensors))

            self._compiled.train_chunk = tf.function(
                lambda *tensors: nn.repeat_step(one, tensors), jit_compile=self._jit_compile)
        return self._compiled.train_chunk(*nn.batch_tensors(batches))

    # -- rollout interface (docs/algorithm.md section 3) -------------------------------------------

    def step(self, x: tf.Tensor, a: tf.Tensor, members: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """One model step per rollout, rollout m using transition (and done) member members[m].

        x [M, B, obs], a [M, B, act], members [M] (or None: M = E, all members in order)
        -> x_next [M, B, obs], done_prob [M, B].
        No gradient reaches the model's variables.
        """
        delta = self.transition.members(tf.concat([x, a], -1), members, stop_gradient=True)
        x_next = x + delta  # [M, B, obs]
        logit = self.done.members(tf.concat([x_next, x, a], -1), members, stop_gradient=True)
        return x_next, tf.sigmoid(logit[..., 0])  # [M, B, obs], [M, B]

    def imagine(self, x: tf.Tensor, a: tf.Tensor, members: dict[str, tf.Tensor],
                carry: Any = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, Any]:
        """One imagined step of ValueRL.rollout: `step`, then `rewards` of the drawn reward
        members. x [M, B, obs], a [M, B, act], members {"transition": [M], "reward": [N]} ->
        x_next [M, B, obs], done_prob [M, B], rew [M, N, B], and `carry` unchanged (the learned
        model's state is x itself; learning/oracle.py's oracle carries the simulator's)."""
        x_next, done_next = self.step(x, a, members["transition"])  # [M, B, obs], [M, B]
        r_hat = self.rewards(x_next, x, a, members["reward"])  # [N, M, B]
        return x_next, done_next, tf.transpose(r_hat, [1, 0, 2]), carry

    def rewards(
        self, x_next: tf.Tensor, x: tf.Tensor, a: tf.Tensor, members: tf.Tensor
    ) -> tf.Tensor:
        """Predicted rewards of N reward members for every rollout.

        x_next, x [M, B, obs], a [M, B, act], members [N] (or None: all) -> r_hat [N, M, B].
        """
        aux_in = tf.concat([x_next, x, a], -1)  # [M, B, 2 obs + act]
        shape = tf.shape(aux_in)
        flat = tf.reshape(aux_in, [-1, 2 * self.obs_dims + self.action_dims])  # [M B, in]
        r_hat = self.reward.members(flat, members, stop_gradient=True)[..., 0]  # [N, M B]
        return tf.reshape(r_hat, [-1, shape[0], shape[1]])  # [N, M, B]
