"""Feed-forward networks, ensembles and an Adam optimizer, in native TensorFlow 2.

Used by every process that holds networks: the policy learner and the world-model learner (through
`valuerl.py` and `worldmodel.py`), the interactors and the evaluators (the policy only). Nothing
here reads or writes files. Importing this module creates no variables and runs no TensorFlow op.

Layer count convention (as in the 2018 code's `layers` argument): a net with `layers` = L has L
weight matrices, so L - 1 hidden ReLU layers of width `hidden_dim` and a linear output layer.

Ensembles hold E members as stacked weights [E, in, out] and biases [E, 1, out], drawn as 2018 drew
them (Glorot over the 3-D shape, `glorot_uniform(stacked=True)`) or, on request, each member as a
single net ("per_member"). The three reads of
docs/algorithm.md section 1 are:
- `random(x, assignment)`: one member per example (see `random_assignment`), [B, out];
- `mean(x)`: average over all E members, [B, out];
- `members(x, members)`: keep the member axis for an explicit list of members (all of them when
  `members` is None), [P, B, out]. With x of shape [P, B, in] member p reads slice p, so a model
  rollout can keep one member per column.
Every call takes `stop_gradient`: the weights are then wrapped in `tf.stop_gradient`, so gradients
still flow through the inputs (the policy objective differentiates Q with respect to the action)
but none reach the net's own variables.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

_CONFIGURED_THREADS: list[int | None] = []


def configure_tensorflow(threads: int | None) -> None:
    """Set TensorFlow's intra- and inter-op thread counts and quiet its logging.

    Call once per process before any TensorFlow op runs; `threads=None` keeps TensorFlow's own
    choice. Calling it again with the same value is a no-op. (`TF_CPP_MIN_LOG_LEVEL=2` only
    silences the C++ start-up lines when it is in the environment before `import tensorflow`,
    so the process that spawns workers should set it.)
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf.get_logger().setLevel(logging.ERROR)
    if _CONFIGURED_THREADS:
        if _CONFIGURED_THREADS[0] != threads:
            raise RuntimeError(
                f"configure_tensorflow was already called with threads={_CONFIGURED_THREADS[0]}; "
                f"TensorFlow cannot change to threads={threads} within one process."
            )
        return
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be a positive integer or None, got {threads}.")
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    _CONFIGURED_THREADS.append(threads)


ENSEMBLE_INITS = ("stacked", "per_member")


def glorot_uniform(
    generator: tf.random.Generator, shape: Sequence[int], stacked: bool = False
) -> tf.Tensor:
    """Glorot-uniform values, uniform in [-limit, limit] with limit = sqrt(6 / (fan_in + fan_out)).

    The last two axes of `shape` are (in, out). By default the fans are those two (one net, or
    each member of an ensemble on its own: "per_member"). With `stacked`, the fans count every
    leading axis as TensorFlow's initialisers do for a 3-D kernel [E, in, out] (fan_in = E * in,
    fan_out = E * out): how the 2018 code drew its ensembles ("stacked"), which gives each member
    1/sqrt(E) of a single net's limit. Both are the same for a single net (E = 1).
    """
    fan_in, fan_out = shape[-2], shape[-1]
    if stacked:
        receptive = math.prod(shape[:-2])
        fan_in, fan_out = fan_in * receptive, fan_out * receptive
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return generator.uniform(shape, minval=-limit, maxval=limit, dtype=tf.float32)


def _layer_dims(in_dim: int, out_dim: int, hidden_dim: int, layers: int) -> list[int]:
    if layers < 1:
        raise ValueError(f"a network needs at least 1 layer, got {layers}.")
    return [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]


class FeedForward(tf.Module):
    """ReLU MLP: `layers` weight matrices, Glorot-uniform weights, zero biases, linear output."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int,
        layers: int,
        init_generator: tf.random.Generator,
        name: str | None = None,
    ):
        super().__init__(name=name)
        self.in_dim, self.out_dim = in_dim, out_dim
        dims = _layer_dims(in_dim, out_dim, hidden_dim, layers)
        self.w = [
            tf.Variable(glorot_uniform(init_generator, (dims[i], dims[i + 1])), name=f"w{i}")
            for i in range(layers)
        ]
        self.b = [tf.Variable(tf.zeros([dims[i + 1]]), name=f"b{i}") for i in range(layers)]

    def __call__(self, x: tf.Tensor, stop_gradient: bool = False) -> tf.Tensor:
        """x [..., in] -> [..., out]."""
        ws = [tf.stop_gradient(w) if stop_gradient else w for w in self.w]
        bs = [tf.stop_gradient(b) if stop_gradient else b for b in self.b]
        lead = tf.shape(x)[:-1]
        h = tf.reshape(x, [-1, self.in_dim])
        for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
            h = tf.matmul(h, w) + b
            if i < len(ws) - 1:
                h = tf.nn.relu(h)
        return tf.reshape(h, tf.concat([lead, [self.out_dim]], axis=0))

    def l2(self) -> tf.Tensor:
        """Sum over weights and biases of 0.5 * w^2."""
        return tf.add_n([tf.nn.l2_loss(v) for v in self.w + self.b])


class Assignment(NamedTuple):
    """A random one-member-per-example read of an ensemble (see `random_assignment`)."""

    perm: tf.Tensor  # [B] int32: a random permutation of the batch
    chosen: tf.Tensor  # [S] int32: S distinct members
    every_member: bool = False  # chosen is range(E): read the stacked weights without a gather


def random_assignment(
    generator: tf.random.Generator, batch_size: tf.Tensor | int, ensemble_size: int, samples: int
) -> Assignment:
    """Draw one member per example from `samples` members chosen without replacement.

    The batch is shuffled and cut into `samples` equal parts, part s going to member chosen[s]: each
    example's member is uniform over the chosen members, each member learns from a different random
    part of the batch, and the ensemble computes B examples' worth of work (not E * B). When every
    member is used, chosen is range(E): the shuffle alone already makes the split random, and the
    stacked weights are then read without a gather (faster, and dense gradients).
    """
    perm = tf.argsort(generator.uniform([batch_size]))
    if samples == ensemble_size:
        return Assignment(perm, tf.range(ensemble_size), every_member=True)
    chosen = tf.argsort(generator.uniform([ensemble_size]))[:samples]
    return Assignment(perm, chosen)


def assigned_members(assignment: Assignment, batch_size: int) -> tf.Tensor:
    """The member that `EnsembleFeedForward.random` uses for each example: [B] int32."""
    samples = assignment.chosen.shape[0]
    group = -(-batch_size // samples)
    position = tf.math.invert_permutation(assignment.perm)  # [B] position of example b
    return tf.gather(assignment.chosen, position // group)


class EnsembleFeedForward(tf.Module):
    """E independent ReLU MLPs held as stacked weights [E, in, out] and biases [E, 1, out].

    `init` = "stacked" (2018, docs/algorithm.md section 1) draws the weights Glorot-uniform over
    the 3-D shape, E counted in both fans; "per_member" draws each member as a single net would be.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int,
        layers: int,
        ensemble_size: int,
        init_generator: tf.random.Generator,
        name: str | None = None,
        init: str = "stacked",
    ):
        super().__init__(name=name)
        if init not in ENSEMBLE_INITS:
            raise ValueError(f"ensemble init {init!r} is not one of {ENSEMBLE_INITS}.")
        self.in_dim, self.out_dim, self.ensemble_size = in_dim, out_dim, ensemble_size
        dims = _layer_dims(in_dim, out_dim, hidden_dim, layers)
        stacked = init == "stacked"
        self.w = [
            tf.Variable(
                glorot_uniform(init_generator, (ensemble_size, dims[i], dims[i + 1]), stacked),
                name=f"w{i}",
            )
            for i in range(layers)
        ]
        self.b = [
            tf.Variable(tf.zeros([ensemble_size, 1, dims[i + 1]]), name=f"b{i}")
            for i in range(layers)
        ]

    def members(
        self, x: tf.Tensor, members: tf.Tensor | None = None, stop_gradient: bool = False
    ) -> tf.Tensor:
        """Keep the member axis.

        x: [B, in] (read by every member) or [P, B, in] (member p reads x[p]).
        members: [P] int32 member indices, or None for all E members in order (P = E).
        Returns [P, B, out].
        """
        x = tf.convert_to_tensor(x)
        h = x if x.shape.rank == 3 else x[tf.newaxis]  # [P or 1, B, in]
        for i in range(len(self.w)):
            w, b = self.w[i], self.b[i]
            if members is not None:
                w, b = tf.gather(w, members), tf.gather(b, members)  # [P, in, out], [P, 1, out]
            if stop_gradient:
                w, b = tf.stop_gradient(w), tf.stop_gradient(b)
            h = tf.matmul(h, w) + b  # [P, B, out]
            if i < len(self.w) - 1:
                h = tf.nn.relu(h)
        return h

    def mean(self, x: tf.Tensor, stop_gradient: bool = False) -> tf.Tensor:
        """Average over all members: x [B, in] -> [B, out]."""
        return tf.reduce_mean(self.members(x, None, stop_gradient), axis=0)

    def random(
        self, x: tf.Tensor, assignment: Assignment, stop_gradient: bool = False
    ) -> tf.Tensor:
        """One member per example (see `random_assignment`): x [B, in] -> [B, out]."""
        x = tf.convert_to_tensor(x)
        samples = assignment.chosen.shape[0]
        batch = tf.shape(x)[0]
        group = (batch + samples - 1) // samples  # examples per member (the last part is padded)
        # Position p of the shuffled batch holds example perm[p]; positions past B repeat the
        # first examples as padding and their outputs are discarded.
        index = tf.tile(assignment.perm, [samples])[: samples * group]  # [S * G]
        grouped = tf.reshape(tf.gather(x, index), [samples, group, self.in_dim])  # [S, G, in]
        chosen = None if assignment.every_member else assignment.chosen
        out = self.members(grouped, chosen, stop_gradient)  # [S, G, out]
        by_position = tf.reshape(out, [samples * group, self.out_dim])[:batch]  # [B, out]
        return tf.gather(by_position, tf.math.invert_permutation(assignment.perm))  # [B, out]

    def l2(self) -> tf.Tensor:
        """Sum over all members' weights and biases of 0.5 * w^2."""
        return tf.add_n([tf.nn.l2_loss(v) for v in self.w + self.b])


class Adam(tf.Module):
    """Adam (Kingma & Ba), in the form of TF1's AdamOptimizer used in 2018 (epsilon outside the
    bias correction). Slots are created at construction, one (m, v) pair per variable in the order
    given, so a checkpoint can be restored before the first step and matched strictly. The
    optimizer holds no reference to the variables it updates: `apply` takes them each time.
    """

    def __init__(
        self,
        variables: Sequence[tf.Variable],
        learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        name: str | None = None,
    ):
        super().__init__(name=name)
        self.learning_rate, self.beta1, self.beta2, self.epsilon = (
            learning_rate,
            beta1,
            beta2,
            epsilon,
        )
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.m = [
            tf.Variable(tf.zeros_like(v), trainable=False, name=f"m{i}")
            for i, v in enumerate(variables)
        ]
        self.v = [
            tf.Variable(tf.zeros_like(v), trainable=False, name=f"v{i}")
            for i, v in enumerate(variables)
        ]

    def apply(self, gradients: Sequence[tf.Tensor], variables: Sequence[tf.Variable]) -> None:
        if len(gradients) != len(self.m) or len(variables) != len(self.m):
            raise ValueError(
                f"Adam {self.name} was built for {len(self.m)} variables but got "
                f"{len(gradients)} gradients for {len(variables)} variables."
            )
        step = tf.cast(self.iterations.assign_add(1), tf.float32)
        b1, b2 = self.beta1, self.beta2
        lr_t = self.learning_rate * tf.sqrt(1.0 - tf.pow(b2, step)) / (1.0 - tf.pow(b1, step))
        for g, var, m, v in zip(gradients, variables, self.m, self.v, strict=True):
            if g is None:
                raise ValueError(f"variable {var.name} received no gradient in {self.name}.")
            g = tf.convert_to_tensor(g)  # gathered members give IndexedSlices
            m_t = m.assign(b1 * m + (1.0 - b1) * g)
            v_t = v.assign(b2 * v + (1.0 - b2) * tf.square(g))
            var.assign_sub(lr_t * m_t / (tf.sqrt(v_t) + self.epsilon))


class EnsembleSizes(NamedTuple):
    ensemble_size: int
    train_sample_count: int
    eval_sample_count: int


def ensemble_sizes(block: dict | None, where: str) -> EnsembleSizes:
    """Read a `bayesian` block {ensemble_size, train_sample_count, eval_sample_count}.

    Absent or false -> a single member (1, 1, 1). `where` names the block in error messages.
    """
    if not block:
        return EnsembleSizes(1, 1, 1)
    try:
        sizes = EnsembleSizes(
            int(block["ensemble_size"]),
            int(block["train_sample_count"]),
            int(block["eval_sample_count"]),
        )
    except KeyError as e:
        raise ValueError(f"config block {where} lacks the key {e.args[0]}; add it.") from None
    for key in ("train_sample_count", "eval_sample_count"):
        count = getattr(sizes, key)
        if not 1 <= count <= sizes.ensemble_size:
            raise ValueError(
                f"{where}.{key} is {count} but must lie between 1 and "
                f"{where}.ensemble_size ({sizes.ensemble_size}); fix the config."
            )
    return sizes


def draw_members(
    generator: tf.random.Generator, ensemble_size: int, count: int
) -> tf.Tensor | None:
    """`count` distinct members of an ensemble of `ensemble_size`, random order: [count] int32.

    None when count == ensemble_size: every member, in order (what the targets compute is
    symmetric in the members, so their order does not matter), read without a gather.
    """
    if count == ensemble_size:
        return None
    return tf.argsort(generator.uniform([ensemble_size]))[:count]


def batch_tensors(batch: Any) -> tuple[tf.Tensor, ...]:
    """A replay batch (fields obs, action, reward, next_obs, terminal, stacked [K, B, ...] or not)
    as float32 tensors in that order: (s0, a0, r0, s1, d1)."""
    return tuple(tf.convert_to_tensor(np.asarray(getattr(batch, k), dtype=np.float32))
                 for k in ("obs", "action", "reward", "next_obs", "terminal"))


def repeat_step(one, tensors: tuple[tf.Tensor, ...]) -> dict[str, tf.Tensor]:
    """Run `one(tensors, k)` (one update on slice k, returning a dict of scalar logs) for
    k = 0..K-1 in a graph loop, K = the leading size of the tensors; return the mean logs.
    For use inside a tf.function: the first update is traced outside the loop so the loop knows
    the logs' structure."""
    count = tf.shape(tensors[0])[0]
    first = one(tensors, 0)

    def body(k, total):
        logs = one(tensors, k)
        return k + 1, {name: total[name] + logs[name] for name in total}

    _, total = tf.while_loop(lambda k, _: k < count, body, (tf.constant(1), first))
    return {name: value / tf.cast(count, value.dtype) for name, value in total.items()}
