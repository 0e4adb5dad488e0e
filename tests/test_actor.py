"""The acting view interactors and evaluators use: a partial restore of the policy, then numpy."""

from pathlib import Path

import numpy as np

import checkpoint
import config as config_lib
import valuerl
from agent import PolicyActor

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
    np.testing.assert_allclose(actor.greedy_action(obs), agent.greedy_action(obs), atol=1e-5)
    np.testing.assert_allclose(actor.explore_action(obs, 0.0), agent.greedy_action(obs),
                               atol=1e-5)
    noisy = actor.explore_action(np.repeat(obs, 50, axis=0), 1.0)
    assert noisy.dtype == np.float32 and np.all(np.abs(noisy) <= 1.0)
    assert not np.allclose(noisy, np.repeat(agent.greedy_action(obs), 50, axis=0), atol=1e-3)
    # About explore_chance of the action dimensions get noise.
    changed = ~np.isclose(actor.explore_action(np.repeat(obs, 500, axis=0), 0.25),
                          np.repeat(agent.greedy_action(obs), 500, axis=0), atol=1e-6)
    assert 0.2 < changed.mean() < 0.3
