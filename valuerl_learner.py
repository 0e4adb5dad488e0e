"""The policy learner: trains the policy and the Q ensemble (STEVE.md sections 3 and 4).

Runs in its own process on GPU `GPU` (master.py). The loop, counters, logging
(`log/valuerl.log`) and checkpoints (`checkpoints/policy/`) are learner.Learner's; this class
adds the ValueRL module, its update, and what happens at each epoch: the hard copy of Q into the
target Q' (DDPG backbone; the TD3 backbone updates its targets by Polyak averaging in its update)
and, for model-based configs, a reload of the newest world-model checkpoint
(`checkpoints/worldmodel/`). A model-based policy learner starts only once the world model has
finished its `pretrain_n` updates and written a checkpoint.

`make_actor` builds what interactors and evaluators act with: the same module, restored from
this learner's checkpoints without its optimizers (a partial restore).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import util
from learner import Learner
from rundir import PHASE_WAITING_FOR_MODEL


class PolicyActor:
    """The acting view of a policy checkpoint, used by interactors and evaluators.

    It restores only the policy (a partial restore) and then acts with a numpy copy of its
    weights: the same math as ValueRL's greedy and exploring actions (STEVE.md section 5), at a
    few microseconds per call instead of the ~1 ms a TensorFlow call costs at batch size 8, so
    acting costs little beyond the simulator.
    """

    def __init__(self, config: dict, seed: int):
        import valuerl

        self.valuerl = valuerl.ValueRL(config, seed=seed)
        self.explore_noise = self.valuerl.explore_noise
        self.rng = np.random.default_rng(seed)
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []

    def restore(self, path: str) -> dict:
        import checkpoint

        counters = checkpoint.restore_checkpoint(path, {"valuerl": self.valuerl.policy_view()},
                                                 strict=False)
        policy = self.valuerl.policy
        self.layers = [(w.numpy(), b.numpy()) for w, b in zip(policy.w, policy.b, strict=True)]
        return counters

    def pre_tanh(self, obs: np.ndarray) -> np.ndarray:
        """pi(obs): obs [B, obs] -> [B, act], ReLU between layers, linear output."""
        h = np.asarray(obs, np.float32)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                np.maximum(h, 0.0, out=h)
        return h

    def greedy_action(self, obs: np.ndarray) -> np.ndarray:
        return np.tanh(self.pre_tanh(obs))  # [B, act]

    def explore_action(self, obs: np.ndarray, explore_chance: float) -> np.ndarray:
        pre = self.pre_tanh(obs)  # [B, act]
        if self.explore_noise:  # policy_config.explore_noise: Gaussian noise on every step
            noise = self.explore_noise * self.rng.standard_normal(pre.shape, np.float32)
            return np.clip(np.tanh(pre) + noise, -1.0, 1.0).astype(np.float32)  # [B, act]
        noisy = self.rng.random(pre.shape) < explore_chance  # [B, act]
        pre = np.where(noisy, pre + self.rng.standard_normal(pre.shape, np.float32), pre)
        return np.clip(np.tanh(pre), -1.0, 1.0).astype(np.float32)  # [B, act]


class ValueRLLearner(Learner):
    role = "policy"

    def build(self) -> dict:
        import valuerl

        self.valuerl = valuerl.ValueRL(self.config, seed=self.spec.seed)
        self.worldmodel = None
        self._model_path = None
        if self.spec.model_based:
            import worldmodel

            self.worldmodel = worldmodel.WorldModel(self.config, seed=self.spec.seed)
        return {"valuerl": self.valuerl}

    def _reload_worldmodel(self) -> bool:
        """Load the newest world model that finished pretraining; True if one is loaded."""
        import checkpoint

        directory = self.run.checkpoint_dir("worldmodel")
        latest = checkpoint.latest_checkpoint(directory)
        if latest is None or latest == self._model_path:
            return self._model_path is not None
        pretrain = int(self.config["model_config"].get("pretrain_n") or 0)
        counters = util.read_json(Path(latest) / "counters.json", {})
        if int(counters.get("updates", 0)) < pretrain:
            return self._model_path is not None
        try:
            checkpoint.restore_checkpoint(latest, {"worldmodel": self.worldmodel}, strict=True)
        except (FileNotFoundError, checkpoint.CheckpointError):
            return self._model_path is not None  # replaced while reading: next epoch
        self._model_path = latest
        return True

    def before_learning(self) -> bool:
        if self.worldmodel is None:
            return True
        self.set_phase(PHASE_WAITING_FOR_MODEL)
        self.log_line("waiting for the world model to finish pretraining")
        while not self._reload_worldmodel():
            if self.stop.wait(0.1):
                return False
            if self.finish.is_set() and self.spec.run.checkpoint_dir("worldmodel").exists() \
                    and self._reload_worldmodel():
                break
        return True

    def learning_rates(self) -> dict[str, float]:
        return {"charts/learning_rate/q": self.valuerl.q_optimizer.learning_rate,
                "charts/learning_rate/policy": self.valuerl.policy_optimizer.learning_rate}

    def update(self, batch) -> dict:
        return self.valuerl.train_step(batch, self.worldmodel)

    def update_many(self, batches) -> dict:
        return self.valuerl.train_steps(batches, self.worldmodel)

    def on_epoch(self) -> None:
        if self.valuerl.td3 is None:  # the TD3 backbone's targets follow by Polyak averaging
            self.valuerl.copy_to_target()
        if self.worldmodel is not None:
            self._reload_worldmodel()

    @staticmethod
    def make_actor(config: dict, seed: int) -> PolicyActor:
        return PolicyActor(config, seed)
