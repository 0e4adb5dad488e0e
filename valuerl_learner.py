"""The policy learner: trains the policy and the Q ensemble (docs/algorithm.md sections 3 and 4).

Runs in its own process on GPU `GPU` (master.py). The loop, counters, logging
(`log/valuerl.log`) and checkpoints (`checkpoints/policy/`) are learner.Learner's; this class
adds the ValueRL module, its update, and what happens at each epoch: the hard copy of Q into the
target Q' (DDPG backbone; the TD3 backbone updates its targets by Polyak averaging in its update)
and, for model-based configs, a reload of the newest world-model checkpoint
(`checkpoints/worldmodel/`). A model-based policy learner starts only once the world model has
finished its `pretrain_n` updates and written a checkpoint. With `value_expansion.oracle` there is
no world-model learner: the model is the simulator (learning/oracle.py), stepped from the
states the replay buffer stores, and learning starts at the policy's own warm-up.

Interactors and evaluators act with agent.PolicyActor, restored from this learner's checkpoints.
"""

from __future__ import annotations

import config as config_lib
from learner import Learner
from process import runtime
from process.roles import POLICY, ROLE, WORLDMODEL
from process.rundir import PHASE_WAITING_FOR_MODEL


class ValueRLLearner(Learner):
    role = POLICY

    def build(self) -> dict:
        import valuerl

        self._unreadable: set[str] = set()  # world-model checkpoints passed over: not read again
        self.valuerl = valuerl.ValueRL(self.config, seed=self.spec.seed)
        self.worldmodel = None
        self._model_path = None
        self.oracle = None
        if self.spec.model_based:
            import worldmodel

            self.worldmodel = worldmodel.WorldModel(self.config, seed=self.spec.seed)
        elif config_lib.uses_oracle(self.config):
            from learning import oracle as mujoco_oracle

            self.oracle = mujoco_oracle.MujocoOracle(self.config["env"])
        return {self.row.checkpoint_key: self.valuerl}

    def _reload_worldmodel(self) -> bool:
        """Load the newest world model that finished pretraining and can be read (a damaged
        newer checkpoint is passed over, said once in the log and not read again); True if one
        is loaded."""
        from process import checkpoint
        directory = str(self.run.checkpoint_dir(WORLDMODEL))
        pretrain = int(self.config["model_config"].get("pretrain_n") or 0)

        def pretrained(path: str) -> bool:
            return int(checkpoint.read_counters(path).get("updates", 0)) >= pretrain

        newest = next((p for p in checkpoint.complete_checkpoints(directory)
                       if p not in self._unreadable and pretrained(p)), None)
        if newest is None or newest == self._model_path:
            return self._model_path is not None
        objects = {ROLE[WORLDMODEL].checkpoint_key: self.worldmodel}
        try:
            loaded = checkpoint.load_newest(
                directory, lambda path: checkpoint.restore_checkpoint(path, objects, strict=True),
                skip=self._unreadable, usable=pretrained)
        except checkpoint.UnreadableCheckpoint as e:
            skipped, loaded = e.skipped, None
        else:
            skipped = loaded.skipped if loaded is not None else ()
        if loaded is not None:
            self._model_path = loaded.path
        if skipped:
            self._unreadable.update(path for path, _ in skipped)
            using = f"using {self._model_path}" if self._model_path else "none loaded yet"
            self.log_line(f"world model: {using}, not the newer "
                          f"{checkpoint.describe_skipped(skipped)}, which cannot be read")
        return self._model_path is not None

    def before_learning(self) -> bool:
        if self.oracle is not None:
            self._check_replay_states()
            return True
        if self.worldmodel is None:
            return True
        self.set_phase(PHASE_WAITING_FOR_MODEL)
        self.log_line("waiting for the world model to finish pretraining")
        while not self._reload_worldmodel():
            runtime.beat()  # waiting for the world model is alive
            if self.stop.wait(0.1):
                return False
            if self.finish.is_set() and self.run.checkpoint_dir(WORLDMODEL).exists() \
                    and self._reload_worldmodel():
                break
        return True

    def _check_replay_states(self) -> None:
        from learning.oracle import OracleError

        have, want = self.replay.state_dims, self.oracle.state_dims
        if have != want:
            raise OracleError(
                f"value_expansion.oracle steps the simulator from the states in the replay "
                f"buffer, but {self.run.replay} stores {have} state numbers per frame, not "
                f"{want} (a run made before states were recorded, or another env); start a new "
                f"run.")

    def learning_rates(self) -> dict[str, float]:
        return {"charts/learning_rate/q": self.valuerl.q_optimizer.learning_rate,
                "charts/learning_rate/policy": self.valuerl.policy_optimizer.learning_rate}

    @property
    def model(self):
        """What the rollouts step: the learned world model, the oracle, or None (model-free)."""
        return self.oracle if self.oracle is not None else self.worldmodel

    def update(self, batch) -> dict:
        return self.valuerl.train_step(batch, self.model)

    def update_many(self, batches) -> dict:
        return self.valuerl.train_steps(batches, self.model)

    def on_epoch(self) -> None:
        if self.valuerl.td3 is None:  # the TD3 backbone's targets follow by Polyak averaging
            self.valuerl.copy_to_target()
        if self.worldmodel is not None:
            self._reload_worldmodel()
