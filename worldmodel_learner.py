"""The world-model learner: trains the transition, reward and done ensembles (docs/algorithm.md
section 2).

Runs in its own process on GPU `GPU+1` (master.py), only for configs with a `model_config`.
The loop, counters, logging (`log/worldmodel.log`) and checkpoints (`checkpoints/worldmodel/`)
are learner.Learner's; this class adds only the model and its update. Its checkpoints are what
the policy learner loads at every epoch.
"""

from __future__ import annotations

from learner import Learner
from process.roles import WORLDMODEL


class WorldModelLearner(Learner):
    role = WORLDMODEL

    def build(self) -> dict:
        import worldmodel

        self.worldmodel = worldmodel.WorldModel(self.config, seed=self.spec.seed)
        return {self.row.checkpoint_key: self.worldmodel}

    def learning_rates(self) -> dict[str, float]:
        return {"charts/learning_rate/worldmodel": self.worldmodel.optimizer.learning_rate}

    def update(self, batch) -> dict:
        return self.worldmodel.train_step(batch)

    def update_many(self, batches) -> dict:
        return self.worldmodel.train_steps(batches)
