"""Fixtures shared by several test files.

- `make_batch`, `stack_batches`: random transition batches for the network tests
  (test_checkpoint.py, test_td3.py, test_valuerl.py).
- `loopback_ray`, `cluster`: a local two-node Ray cluster on 127.0.0.1 for the sweep tests
  (test_sweep.py, test_sample_efficiency.py).

The folders `.` and `tests/` are on sys.path (pyproject.toml's `pythonpath`), so the test files
import the project's modules and the shared test modules by name, and so do the processes they
spawn: `pipeline_stubs` (the counting environment and stub learners), `master_runs` (running
master.py), `np_reference` (the numpy STEVE targets and forward passes) and `doc_walk` (the
walkers over the documentation's Markdown). Test files import helpers from these, never from
each other.
TensorFlow's C++ log is kept to warnings and errors (TF_CPP_MIN_LOG_LEVEL=2 unless already set),
as the network test files each did before they import TensorFlow.
The marker `slow` (pyproject.toml) is on every test that runs master.py, a benchmark script, a
Ray cluster, spawned worker processes or a fresh Python that loads TensorFlow:
`pytest -m "not slow"` checks the rest.
"""

import os
import types

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH_FIELDS = ("obs", "action", "reward", "next_obs", "terminal")


def _random_batch(obs_dims: int, action_dims: int, size: int = 16,
                  seed: int = 0) -> types.SimpleNamespace:
    rng = np.random.default_rng(seed)
    return types.SimpleNamespace(
        obs=rng.normal(size=(size, obs_dims)).astype(np.float32),
        action=rng.uniform(-1, 1, size=(size, action_dims)).astype(np.float32),
        reward=rng.normal(size=size).astype(np.float32),
        next_obs=rng.normal(size=(size, obs_dims)).astype(np.float32),
        terminal=(rng.uniform(size=size) < 0.2).astype(np.float32),
    )


def _stack_batches(parts: list[types.SimpleNamespace]) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{f: np.stack([getattr(p, f) for p in parts])
                                    for f in BATCH_FIELDS})


@pytest.fixture
def make_batch():
    """`make_batch(obs_dims, action_dims, size=16, seed=0)`: `size` random transitions with the
    fields a replay sample has (obs, action in [-1, 1], reward, next_obs, terminal about one in
    five), float32, the same for the same seed."""
    return _random_batch


@pytest.fixture
def stack_batches():
    """`stack_batches(parts)`: K batches of make_batch stacked field by field, [K, B, ...], as
    train_steps takes them."""
    return _stack_batches


@pytest.fixture(scope="module")
def loopback_ray():
    """Keep every Ray process of the module on 127.0.0.1: sweep.LOCAL_ENV is set before Ray is
    first started and the environment restored afterwards."""
    import sweep

    old = {k: os.environ.get(k) for k in sweep.LOCAL_ENV}
    os.environ.update(sweep.LOCAL_ENV)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def cluster(loopback_ray):
    """A two-node local Ray cluster on 127.0.0.1 (one CPU per node) for the module, stopped by
    its handle."""
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        c.add_node(num_cpus=1)
        c.wait_for_nodes()
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
