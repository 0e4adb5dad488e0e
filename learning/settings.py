"""What the policy learner's agent reads from a config: `Settings`, built once per ValueRL.

Imported by valuerl.py, so it runs in every process that builds a ValueRL (the policy learner,
the interactors and evaluators, the visualizer and the benchmarks). Reads and writes nothing on
disk; imports nn.py for the ensemble sizes (and so TensorFlow, as valuerl.py does anyway).

Config keys read: `env.obs_dims`, `env.action_dims`, `env.reward_scale`, `env.discount`;
`policy_config.{hidden_dim, hidden_layers, ensemble_init, ensemble_batch, backbone, td3,
explore_noise, learning_rate, pretanh_penalty, variance_epsilon, covariance_ridge, bayesian,
value_expansion}`;
`model_config.bayesian` (member counts M and N; one each without a model_config, as with
`value_expansion.oracle`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import nn


class Td3(NamedTuple):
    """`policy_config.td3` (read only with `backbone: "td3"`)."""

    target_noise: float  # std of the target-policy smoothing noise, in action units ([-1, 1])
    target_noise_clip: float  # the smoothing noise is clipped to +-this
    policy_delay: int  # a policy step (and target update) after every d-th Q step
    tau: float  # Polyak rate of the target nets: target <- tau * net + (1 - tau) * target


def _full_batch(block: dict, sizes: nn.EnsembleSizes, where: str) -> bool:
    """Read `ensemble_batch` ("split", the 2018 default, or "full"); "full" trains every member,
    so it needs train_sample_count == ensemble_size."""
    mode = str(block.get("ensemble_batch") or "split")
    if mode == "full" and sizes.train_sample_count != sizes.ensemble_size:
        raise ValueError(
            f"{where}.ensemble_batch is \"full\" (every member trains on the whole batch), but "
            f"train_sample_count ({sizes.train_sample_count}) is below ensemble_size "
            f"({sizes.ensemble_size}); set them equal or use \"split\"."
        )
    return mode == "full"


@dataclass(frozen=True)
class Settings:
    """Everything ValueRL reads from a config, read once (`from_config`).

    config.load_config has already checked a resolved config (every key present, every value
    in range, a TD3 block exactly with the TD3 backbone); the defaults below serve the partial
    configs that tests and tools build by hand, and are the ones config/core/*.json sets.
    """

    obs_dims: int
    action_dims: int
    gamma: float  # env.discount
    reward_scale: float
    hidden_dim: int
    hidden_layers: int
    ensemble_init: str  # "stacked" (2018) or "per_member"
    learning_rate: float
    pretanh_penalty: float
    variance_epsilon: float
    covariance_ridge: float
    explore_noise: float  # 0: the 2018 per-dimension exploration with explore_chance
    q_sizes: nn.EnsembleSizes
    q_full_batch: bool  # ensemble_batch "full": every Q member trains on the whole batch
    value_expansion: dict  # {} without value expansion (DDPG, H = 0)
    rollout_len: int  # H
    transition_sizes: nn.EnsembleSizes  # M (the model's transition and done members)
    reward_sizes: nn.EnsembleSizes  # N
    oracle: bool  # value_expansion.oracle: the simulator is the model (M = N = 1)
    td3: Td3 | None  # the TD3 backbone's settings (docs/BACKBONES.md), None for DDPG

    @classmethod
    def from_config(cls, config: dict) -> Settings:
        env, pc = config["env"], config["policy_config"]
        model = config.get("model_config") or {}
        value_expansion = dict(pc.get("value_expansion") or {})
        oracle = bool(value_expansion.get("oracle"))
        if value_expansion and not model and not oracle:
            raise ValueError(
                "policy_config.value_expansion needs a model_config block (a world model to roll "
                "out) or value_expansion.oracle; add one or remove value_expansion."
            )
        q_sizes = nn.ensemble_sizes(pc.get("bayesian"), "policy_config.bayesian")
        bayes = (model.get("bayesian") or {}) if model else {}
        td3 = None
        if pc.get("backbone") == "td3":
            b = pc["td3"]
            td3 = Td3(float(b["target_noise"]), float(b["target_noise_clip"]),
                      int(b["policy_delay"]), float(b["tau"]))
        return cls(
            obs_dims=int(env["obs_dims"]), action_dims=int(env["action_dims"]),
            gamma=float(env["discount"]), reward_scale=float(env.get("reward_scale", 1.0)),
            hidden_dim=int(pc.get("hidden_dim", 128)),
            hidden_layers=int(pc.get("hidden_layers", 4)),
            ensemble_init=str(pc.get("ensemble_init", "stacked")),
            learning_rate=float(pc.get("learning_rate", 3e-4)),
            pretanh_penalty=float(pc.get("pretanh_penalty", 1e-3)),
            variance_epsilon=float(pc.get("variance_epsilon", 1e-8)),
            covariance_ridge=float(pc.get("covariance_ridge", 1e-3)),
            explore_noise=float(pc.get("explore_noise") or 0.0),
            q_sizes=q_sizes, q_full_batch=_full_batch(pc, q_sizes, "policy_config"),
            value_expansion=value_expansion,
            rollout_len=int(value_expansion.get("rollout_len", 0) or 0),
            transition_sizes=nn.ensemble_sizes(bayes.get("transition"),
                                               "model_config.bayesian.transition"),
            reward_sizes=nn.ensemble_sizes(bayes.get("reward"), "model_config.bayesian.reward"),
            oracle=oracle,
            td3=td3,
        )
