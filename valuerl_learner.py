"""The policy learner: trains the policy and the Q ensemble (STEVE.md sections 3 and 4).

Runs in its own process on GPU `GPU` (master.py). The loop, counters, logging
(`log/valuerl.log`) and checkpoints (`checkpoints/policy/`) are learner.Learner's; this class
adds the ValueRL module, its update, and what happens at each epoch: the hard copy of Q into the
target Q' and, for model-based configs, a reload of the newest world-model checkpoint
(`checkpoints/worldmodel/`). A model-based policy learner starts only once the world model has
finished its `pretrain_n` updates and written a checkpoint.

`make_actor` builds what interactors and evaluators act with: the same module, restored from
this learner's checkpoints without its optimizers (a partial restore).
"""

from __future__ import annotations

from pathlib import Path

import util
from learner import Learner


class PolicyActor:
    """The acting view of a policy checkpoint, used by interactors and evaluators."""

    def __init__(self, config: dict, seed: int):
        import valuerl

        self.valuerl = valuerl.ValueRL(config, seed=seed)

    def restore(self, path: str) -> dict:
        import checkpoint

        return checkpoint.restore_checkpoint(path, {"valuerl": self.valuerl}, strict=False)

    def greedy_action(self, obs):
        return self.valuerl.greedy_action(obs)

    def explore_action(self, obs, explore_chance: float):
        return self.valuerl.explore_action(obs, explore_chance)


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
            checkpoint.restore_checkpoint(latest, {"worldmodel": self.worldmodel}, strict=False)
        except (FileNotFoundError, checkpoint.CheckpointError):
            return self._model_path is not None  # replaced while reading: next epoch
        self._model_path = latest
        return True

    def before_learning(self) -> bool:
        if self.worldmodel is None:
            return True
        self.log_line("waiting for the world model to finish pretraining")
        while not self._reload_worldmodel():
            if self.stop.wait(0.1):
                return False
            if self.finish.is_set() and self.spec.run.checkpoint_dir("worldmodel").exists() \
                    and self._reload_worldmodel():
                break
        return True

    def update(self, batch) -> dict:
        return self.valuerl.train_step(batch, self.worldmodel)

    def on_epoch(self) -> None:
        self.valuerl.copy_to_target()
        if self.worldmodel is not None:
            self._reload_worldmodel()

    @staticmethod
    def make_actor(config: dict, seed: int) -> PolicyActor:
        return PolicyActor(config, seed)
