"""Tests of nn.py: initialisation, the three ensemble reads and explicit members, gradient stopping,
the L2 term, Adam against a numpy Adam, and configure_tensorflow. Writes nothing to disk."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import nn
from np_reference import np_mlp, weights

ROOT = Path(__file__).resolve().parents[1]


def perturb_biases(net, seed=0):
    rng = np.random.default_rng(seed)
    for b in net.b:
        b.assign(rng.normal(size=b.shape).astype(np.float32))


def test_glorot_uniform_weights_and_zero_biases():
    net = nn.FeedForward(300, 5, 200, 3, tf.random.Generator.from_seed(0))
    assert [tuple(w.shape) for w in net.w] == [(300, 200), (200, 200), (200, 5)]
    limit = np.sqrt(6.0 / (300 + 200))
    w0 = net.w[0].numpy()
    assert np.abs(w0).max() <= limit and np.abs(w0).max() > 0.99 * limit
    np.testing.assert_allclose(w0.std(), limit / np.sqrt(3.0), rtol=0.02)
    assert all(np.all(b.numpy() == 0.0) for b in net.b)
    ens = nn.EnsembleFeedForward(10, 1, 8, 2, 4, tf.random.Generator.from_seed(0))
    assert [tuple(w.shape) for w in ens.w] == [(4, 10, 8), (4, 8, 1)]
    assert [tuple(b.shape) for b in ens.b] == [(4, 1, 8), (4, 1, 1)]
    assert not np.allclose(ens.w[0].numpy()[0], ens.w[0].numpy()[1])  # independent members


def test_ensemble_init_stacked_as_2018_or_per_member():
    # 2018: Glorot over the stacked [E, in, out] shape, E in both fans: limit sqrt(6 / (E in +
    # E out)), 1/sqrt(E) of a single net's (half for E = 4). "per_member": a single net's limit.
    E, fan_in, fan_out = 4, 300, 200
    single = np.sqrt(6.0 / (fan_in + fan_out))
    for init, limit in (("stacked", single / np.sqrt(E)), ("per_member", single)):
        ens = nn.EnsembleFeedForward(fan_in, 5, fan_out, 3, E, tf.random.Generator.from_seed(0),
                                     init=init)
        w0 = ens.w[0].numpy()  # [E, 300, 200]
        for e in range(E):  # every member at that scale, not just the stack as a whole
            assert np.abs(w0[e]).max() <= limit and np.abs(w0[e]).max() > 0.99 * limit, init
            np.testing.assert_allclose(w0[e].std(), limit / np.sqrt(3.0), rtol=0.02)
        out_limit = np.sqrt(6.0 / (fan_out + 5) / (E if init == "stacked" else 1))
        assert out_limit * 0.9 < np.abs(ens.w[2].numpy()).max() <= out_limit
    assert "stacked" == nn.EnsembleFeedForward.__init__.__defaults__[-1]  # the 2018 default
    # a single member (DDPG's Q) is drawn identically either way, and as a FeedForward's limit
    one = [nn.EnsembleFeedForward(10, 1, 8, 3, 1, tf.random.Generator.from_seed(3), init=i)
           for i in ("stacked", "per_member")]
    for a, b in zip(one[0].w, one[1].w, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="not one of"):
        nn.EnsembleFeedForward(10, 1, 8, 3, 2, tf.random.Generator.from_seed(3), init="glorot")


def test_same_seed_same_weights():
    a = nn.FeedForward(4, 2, 8, 3, tf.random.Generator.from_seed(7))
    b = nn.FeedForward(4, 2, 8, 3, tf.random.Generator.from_seed(7))
    c = nn.FeedForward(4, 2, 8, 3, tf.random.Generator.from_seed(8))
    assert all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a.w, b.w, strict=True))
    assert not np.array_equal(a.w[0].numpy(), c.w[0].numpy())


def test_feedforward_matches_numpy_with_leading_axes():
    net = nn.FeedForward(4, 3, 8, 3, tf.random.Generator.from_seed(1))
    perturb_biases(net)
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)
    ref = np_mlp(*weights(net), x)
    np.testing.assert_allclose(net(tf.constant(x)).numpy(), ref, rtol=1e-5, atol=1e-6)


def ensemble_reference(ens, x):
    return np.stack([
        np_mlp(*weights(ens, e), x)
        for e in range(ens.ensemble_size)
    ])  # [E, B, out]


def test_ensemble_reads_match_numpy():
    ens = nn.EnsembleFeedForward(3, 2, 8, 3, 4, tf.random.Generator.from_seed(2))
    perturb_biases(ens)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 3)).astype(np.float32)
    ref = ensemble_reference(ens, x)  # [4, 7, 2]
    np.testing.assert_allclose(ens.members(x).numpy(), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ens.mean(x).numpy(), ref.mean(0), rtol=1e-5, atol=1e-6)
    # explicit members, shared input
    got = ens.members(tf.constant(x), tf.constant([3, 1])).numpy()
    np.testing.assert_allclose(got, ref[[3, 1]], rtol=1e-5, atol=1e-6)
    # one member per column: member p reads x[p]
    xs = rng.normal(size=(2, 7, 3)).astype(np.float32)
    got = ens.members(tf.constant(xs), tf.constant([2, 0])).numpy()
    np.testing.assert_allclose(got[0], ensemble_reference(ens, xs[0])[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], ensemble_reference(ens, xs[1])[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch,samples", [(12, 4), (10, 4), (3, 4), (9, 1), (8, 3)])
def test_random_read_uses_the_assigned_member_per_example(batch, samples):
    ens = nn.EnsembleFeedForward(3, 2, 8, 2, 4, tf.random.Generator.from_seed(3))
    perturb_biases(ens)
    x = np.random.default_rng(2).normal(size=(batch, 3)).astype(np.float32)
    ref = ensemble_reference(ens, x)
    gen = tf.random.Generator.from_seed(0)
    counts = np.zeros(4)
    for _ in range(5):
        assignment = nn.random_assignment(gen, batch, 4, samples)
        chosen = assignment.chosen.numpy()
        assert len(set(chosen)) == samples
        used = nn.assigned_members(assignment, batch).numpy()
        assert set(used) <= set(chosen)
        got = ens.random(tf.constant(x), assignment).numpy()
        np.testing.assert_allclose(got, ref[used, np.arange(batch)], rtol=1e-5, atol=1e-6)
        sizes = np.bincount(used, minlength=4)[chosen]
        assert sizes.max() - sizes.min() <= max(1, -(-batch // samples))  # a balanced split
        counts += np.bincount(used, minlength=4)
    if samples == 4 and batch >= 8:
        assert np.all(counts > 0)  # over several draws every member is used


def test_stop_gradient_blocks_the_weights_but_not_the_input():
    ens = nn.EnsembleFeedForward(3, 1, 8, 2, 2, tf.random.Generator.from_seed(4))
    net = nn.FeedForward(3, 1, 8, 2, tf.random.Generator.from_seed(4))
    x = tf.constant(np.random.default_rng(3).normal(size=(5, 3)).astype(np.float32))
    for call, variables in ((lambda: ens.mean(x, stop_gradient=True), ens.trainable_variables),
                            (lambda: net(x, stop_gradient=True), net.trainable_variables)):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            out = tf.reduce_sum(call())
        assert all(g is None for g in tape.gradient(out, variables))
        assert tape.gradient(out, x) is not None
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(ens.mean(x))
    assert all(g is not None for g in tape.gradient(out, ens.trainable_variables))


def test_l2_is_half_sum_of_squares_of_weights_and_biases():
    ens = nn.EnsembleFeedForward(3, 2, 4, 2, 3, tf.random.Generator.from_seed(5))
    perturb_biases(ens)
    expected = sum(0.5 * np.sum(v.numpy().astype(np.float64) ** 2) for v in ens.w + ens.b)
    np.testing.assert_allclose(float(ens.l2()), expected, rtol=1e-5)


def test_adam_matches_numpy_adam():
    var = tf.Variable([[1.0, -2.0], [0.5, 3.0]])
    opt = nn.Adam([var], learning_rate=0.1)
    x = var.numpy().astype(np.float64)
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    for t in range(1, 6):
        g = 2.0 * x + t  # gradient of sum(x^2 + t x)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(var) + t * var)
        opt.apply(tape.gradient(loss, [var]), [var])
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        lr_t = 0.1 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        x = x - lr_t * m / (np.sqrt(v) + 1e-8)
        np.testing.assert_allclose(var.numpy(), x, rtol=1e-5, atol=1e-5)  # float32 steps
    assert int(opt.iterations.numpy()) == 5
    assert len(opt.m) == 1 and len(opt.v) == 1


def test_ensemble_sizes_reads_and_checks_the_block():
    assert nn.ensemble_sizes(None, "x") == (1, 1, 1)
    block = {"ensemble_size": 4, "train_sample_count": 3, "eval_sample_count": 2}
    assert nn.ensemble_sizes(block, "x") == (4, 3, 2)
    with pytest.raises(ValueError, match="policy_config.bayesian.eval_sample_count"):
        nn.ensemble_sizes({**block, "eval_sample_count": 5}, "policy_config.bayesian")


@pytest.mark.slow
def test_configure_tensorflow_in_a_fresh_process():
    code = (
        "import nn, tensorflow as tf\n"
        "nn.configure_tensorflow(1)\n"
        "nn.configure_tensorflow(1)\n"
        "assert tf.config.threading.get_intra_op_parallelism_threads() == 1\n"
        "assert tf.config.threading.get_inter_op_parallelism_threads() == 1\n"
        "try:\n"
        "    nn.configure_tensorflow(2)\n"
        "except RuntimeError as e:\n"
        "    print('refused:', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "refused: configure_tensorflow was already called with threads=1" in result.stdout


@pytest.mark.slow
def test_import_creates_no_variables():
    code = (
        "import tensorflow as tf\n"
        "import nn, valuerl, worldmodel\n"
        "from process import checkpoint\n"
        "from tensorflow.python.eager import context\n"
        "print('initialized', context.context()._context_handle is not None)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "initialized False" in result.stdout
