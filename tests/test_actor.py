"""The one implementation of acting (interactors, evaluators, the visualizer): a partial restore
of the policy, then numpy, checked against the policy network itself."""

from pathlib import Path

import numpy as np

import config as config_lib
import valuerl
from process import checkpoint
from process.actors import PolicyActor

TINY_STEVE = Path(__file__).resolve().parent / "configs/tiny_steve.json"


def test_policy_actor_matches_valuerl(tmp_path):
    config = config_lib.load_config(TINY_STEVE)
    agent = valuerl.ValueRL(config, seed=5)
    path = checkpoint.save_checkpoint(str(tmp_path / "policy"), {"valuerl": agent},
                                      {"epoch": 3, "updates": 75, "frames": 200, "hours": 0.5})
    actor = PolicyActor(config, seed=1)  # other initial weights until restored
    obs = np.random.default_rng(0).standard_normal((6, config["env"]["obs_dims"]), np.float32)
    counters = actor.restore(path)
    assert counters["epoch"] == 3 and counters["updates"] == 75
    greedy = np.tanh(agent.policy(obs).numpy())  # tanh(pi(s)), docs/algorithm.md section 5
    np.testing.assert_allclose(actor.greedy_action(obs), greedy, atol=1e-5)
    assert actor.greedy_action(obs).shape == (6, config["env"]["action_dims"])
    np.testing.assert_allclose(actor.explore_action(obs, 0.0), greedy, atol=1e-5)
    noisy = actor.explore_action(np.repeat(obs, 50, axis=0), 1.0)
    assert noisy.dtype == np.float32 and np.all(np.abs(noisy) <= 1.0)
    assert not np.allclose(noisy, np.repeat(greedy, 50, axis=0), atol=1e-3)
    # About explore_chance of the action dimensions get noise.
    changed = ~np.isclose(actor.explore_action(np.repeat(obs, 500, axis=0), 0.25),
                          np.repeat(greedy, 500, axis=0), atol=1e-6)
    assert 0.2 < changed.mean() < 0.3
    # The same seed gives the same noise.
    twin = PolicyActor(config, seed=1)
    twin.restore(path)
    fresh = PolicyActor(config, seed=1)
    fresh.restore(path)
    np.testing.assert_array_equal(twin.explore_action(obs, 1.0), fresh.explore_action(obs, 1.0))


def test_watcher_acts_from_the_older_checkpoint_when_the_newest_cannot_be_read(
        tmp_path, capsys, monkeypatch):
    """An interactor or evaluator given a damaged newest checkpoint loads the older one (and
    says so once) instead of trying the damaged one at every poll and never acting with a
    policy; a later checkpoint is loaded as usual, and the damaged one is not read again."""
    import time

    from process.actors import PolicyWatcher
    from process.roles import ProcessSpec
    from process.rundir import RunDir

    monkeypatch.setattr(checkpoint, "RETRY_SECONDS", 0.0, raising=False)
    config = config_lib.load_config(TINY_STEVE)
    run = RunDir(root=str(tmp_path / "run"), name="run")
    directory = str(run.checkpoint_dir("policy"))
    old, new = valuerl.ValueRL(config, seed=5), valuerl.ValueRL(config, seed=6)
    counters = {"updates": 75, "frames": 200, "hours": 0.5}
    checkpoint.save_checkpoint(directory, {"valuerl": old}, {**counters, "epoch": 3})
    newest = checkpoint.save_checkpoint(directory, {"valuerl": new}, {**counters, "epoch": 4})
    data = Path(newest) / "variables.data-00000-of-00001"
    data.write_bytes(b"")  # lost: a machine crash before the files reached the disk
    spec = ProcessSpec(role="interactor", index=0, run=run, config=config, seed=0,
                       cuda_visible_devices="", hours_base=0.0, start_time=time.time())
    watcher = PolicyWatcher(spec, seed=1)
    assert watcher.poll()
    assert watcher.epoch == 3
    obs = np.random.default_rng(0).standard_normal((6, config["env"]["obs_dims"]), np.float32)
    np.testing.assert_allclose(watcher.actor.greedy_action(obs), np.tanh(old.policy(obs).numpy()),
                               atol=1e-5)
    out = capsys.readouterr().out
    assert out.count("which cannot be read") == 1 and f"the newer {newest} (" in out
    assert "interactor-0: acting with" in out

    reads = []
    restore = watcher.actor.restore
    monkeypatch.setattr(watcher.actor, "restore", lambda path: reads.append(path) or
                        restore(path))
    assert watcher.poll() and reads == []  # the same pointer: nothing is read
    newer = checkpoint.save_checkpoint(directory, {"valuerl": new}, {**counters, "epoch": 5})
    assert watcher.poll() and watcher.epoch == 5 and reads == [newer]
    np.testing.assert_allclose(watcher.actor.greedy_action(obs), np.tanh(new.policy(obs).numpy()),
                               atol=1e-5)
    assert capsys.readouterr().out == ""
