"""The learner loop, shared by the policy learner and the world-model learner.

Runs in the learner processes (`master.py` starts one per learner, through runtime.child_main).
Reads the shared replay buffer (`replay/`) and the other learner's checkpoints; writes its own
checkpoints (`checkpoints/<role>/`), numbered backups (`checkpoints/backups/`), its log
(`log/valuerl.log` or `log/worldmodel.log`), TensorBoard summaries (`tensorboard/<role>/`, x-axis
frames: every logged value, a per-horizon vector as `<key>/j<j>` scalars plus one histogram, the
learning rates; the policy learner also the resolved config as text and hparams) and its update
counter in `state/progress.bin`.

The loop (docs/algorithm.md section 5):
1. restore the newest readable checkpoint of this role, if any (resume): counters continue;
2. wait until the buffer holds `frames_before_learning` frames;
3. `before_learning()` (the policy learner waits here for the first world model);
4. update: the first `pretrain_n` updates run unthrottled (world model only); after them, update
   number u (counting from the end of pretraining) may run only when
   frames - frames_before_learning > frames_per_update * u (roles.frame_ratio, the rule the
   interactors also pause by); `frames_per_update: false` runs free. Every `log_every_n`
   updates a log line; every `epoch_every_n` a checkpoint (an epoch, after `on_epoch()`); every
   `backup_every_n` a numbered backup of the newest checkpoint (named by the updates it holds).
   With `updates_per_call` = n > 1, n updates that are all allowed and pass none of those
   boundaries run in one compiled call (`update_many`), each on its own batch; otherwise one at
   a time (`update`);
5. on `stop`: a final checkpoint at once; on `finish` (frame budget reached): do the updates
   still owed for the frames collected, then a final checkpoint. Before its first update a
   learner has nothing to save, and a SIGTERM or the master's death ends it at once
   (runtime.holding_work).

Subclasses add only what is theirs: `role` (their row of the role table in process/roles.py, which
names their config block, log, checkpoint key and TensorBoard folder), `build()` (the objects to
checkpoint), `update(batch)` and `update_many(batches)`, `before_learning()` and `on_epoch()`.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

import numpy as np

import util
from process import runtime
from process.roles import ProcessSpec, Role, frame_ratio, role
from process.rundir import PHASE_UPDATING, PHASE_WAITING_FOR_FRAMES, Progress
from replay import ReplayBuffer

WAIT_SECONDS = 0.002  # how long a learner waits for new frames before looking again


class Learner:
    role = "?"  # a learner role of process/roles.py: POLICY or WORLDMODEL

    def __init__(self, spec: ProcessSpec, stop, finish):
        self.spec = spec
        self.stop = stop
        self.finish = finish
        self.config = spec.config
        self.cfg = spec.config[self.row.config_block]
        self.run = spec.run
        self.replay: ReplayBuffer | None = None
        self.progress = Progress(self.run.progress_file)
        self.rng = np.random.default_rng([spec.seed, self.row.seed_stream])
        self.updates = 0
        self.epoch = 0
        self.hours_base = spec.hours_base  # the run's hours before this start (master.py)
        self.start_time = spec.start_time
        self.pretrain_n = int(self.cfg.get("pretrain_n") or 0)
        self._logs: dict[str, list[float]] = defaultdict(list)
        self._log_t = time.time()
        self._log_updates = 0
        self._writer = None

    @property
    def row(self) -> Role:
        """This learner's row of the role table (its config block, names on disk...)."""
        return role(self.role)

    # ------------------------------------------------------------------ hooks
    def build(self) -> dict:
        """Create the networks and optimizers; return the objects a checkpoint holds."""
        raise NotImplementedError

    def update(self, batch) -> dict:
        """One update on one batch; returns the values to log (floats or scalar tensors)."""
        raise NotImplementedError

    def update_many(self, batches) -> dict:
        """`updates_per_call` updates on batches stacked as [n, B, ...]; returns the logs averaged
        over them. This default calls `update` n times; the real learners run all n in one
        compiled call."""
        n = len(batches.reward)
        logs = [self.update(type(batches)(*(field[k] for field in batches))) for k in range(n)]
        return {key: np.mean([np.asarray(entry[key], np.float64) for entry in logs], axis=0)
                for key in logs[0]}

    def before_learning(self) -> bool:
        """Called once before the first update; return False if `stop` interrupted it."""
        return True

    def on_epoch(self) -> None:
        """Called at every epoch, before the checkpoint is written."""

    @staticmethod
    def make_actor(config: dict, seed: int):
        """What interactors and evaluators act with when ProcessSpec.impl names no actor for
        them (a stand-in policy learner brings its own; the real one's is agent.PolicyActor)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ counters
    @property
    def hours(self) -> float:
        return self.hours_base + (time.time() - self.start_time) / 3600.0

    def frames(self) -> int:
        return self.replay.count if self.replay is not None else 0

    def counters(self) -> dict:
        return {"epoch": self.epoch, "updates": self.updates, "frames": self.frames(),
                "hours": self.hours}

    def _publish(self) -> None:
        self.progress.set_counters(self.role, self.updates, self.epoch)

    def set_phase(self, phase: int) -> None:
        """What this learner is doing (rundir.PHASE_*), for the master's status line."""
        self.progress.set_phase(self.role, phase)

    # ------------------------------------------------------------------ checkpoints
    def restore(self, objects: dict) -> None:
        """Resume from this role's newest checkpoint that can be read (checkpoint.load_newest:
        a damaged newer one is passed over, and the log line says which)."""
        from process import checkpoint
        loaded = checkpoint.load_newest(
            str(self.run.checkpoint_dir(self.role)),
            lambda path: checkpoint.restore_checkpoint(path, objects, strict=True))
        if loaded is None:
            return
        counters = loaded.counters
        self.updates = int(counters["updates"])
        self.epoch = int(counters["epoch"])
        self.hours_base = max(self.hours_base, float(counters["hours"]))
        self._publish()
        if loaded.skipped:
            self.log_line(f"resumed from {loaded.path}, not from the newer "
                          f"{checkpoint.describe_skipped(loaded.skipped)}, which cannot be read")
        else:
            self.log_line(f"resumed from {loaded.path}")

    def save(self, objects: dict) -> None:
        from process import checkpoint
        checkpoint.save_checkpoint(self.run.checkpoint_dir(self.role), objects, self.counters())

    def backup(self) -> None:
        """A numbered backup of the newest checkpoint, named by the updates it holds (the last
        epoch's, not self.updates); one already there is kept (checkpoint.backup_checkpoint)."""
        from process import checkpoint
        made = checkpoint.backup_checkpoint(self.run.checkpoint_dir(self.role),
                                            self.run.backup_dir(self.role))
        if made.note:
            self.log_line(made.note)

    # ------------------------------------------------------------------ logging
    def log_line(self, text: str) -> None:
        util.append_line(self.run.log / self.row.log, text)  # whole, even on a full disk

    def learning_rates(self) -> dict[str, float]:
        """{TensorBoard tag: learning rate} of this learner's optimizers."""
        return {}

    def _summary_writer(self):
        if self._writer is None:
            import tensorflow as tf

            folder = self.run.tensorboard(self.row.tensorboard_name(0))
            self._writer = tf.summary.create_file_writer(str(folder))
            if self.row.summarises_config:  # hps.json also names the run and its seed
                hps = util.read_json(self.run.hps, None) or self.config
                write_config_summaries(self._writer, hps, self.frames())
        return self._writer

    def _record(self, logs: dict, updates: int = 1) -> None:
        """Keep `logs` (the mean over `updates` updates) for the next log line. A log may be a
        vector (the per-horizon STEVE values, [H+1]): it becomes one value per j, `<key>/j<j>`,
        in the log line and in TensorBoard, plus one TensorBoard histogram over j."""
        for key, value in logs.items():
            self._logs[key].extend([value] * updates)
        if self.updates % self.cfg["log_every_n"]:
            return
        import tensorflow as tf

        now = time.time()
        values: dict[str, float] = {}
        profiles: dict[str, np.ndarray] = {}
        for key, entries in self._logs.items():
            mean = np.mean([np.asarray(x, np.float64) for x in entries], axis=0)
            if mean.ndim:
                profiles[key] = mean
                values.update({f"{key}/j{j}": float(x) for j, x in enumerate(mean)})
            else:
                values[key] = float(mean)
        values["charts/updates_per_s"] = (self.updates - self._log_updates) / max(
            now - self._log_t, 1e-9)
        self._log_t, self._log_updates = now, self.updates
        self._logs.clear()
        frames = self.frames()
        fields = " ".join(f"{k}={v:.6g}" for k, v in sorted(values.items()))
        self.log_line(f"hours={self.hours:.4f} epoch={self.epoch} updates={self.updates} "
                      f"frames={frames} {fields}")
        with self._summary_writer().as_default(step=frames):
            for key, value in values.items():
                tf.summary.scalar(key, value)
            for key, profile in profiles.items():
                horizon_histogram(key, profile)
            for key, value in self.learning_rates().items():
                tf.summary.scalar(key, value)
            tf.summary.scalar("charts/updates", self.updates)
            tf.summary.scalar("charts/updates_per_frame",
                              self.updates / max(frames, 1))

    # ------------------------------------------------------------------ the loop
    def may_update(self, n: int = 1) -> bool:
        """Whether the frames_per_update rule (roles.frame_ratio) lets the next `n` updates run."""
        return frame_ratio(self.frames(), self.updates, self.cfg, n).may_update

    def _room(self, n: int) -> int:
        """How many of the next `n` updates run before a log line, an epoch, a backup or the end
        of pretraining is due (the first such boundary is included)."""
        room = n
        for every in (self.cfg["log_every_n"], self.cfg["epoch_every_n"],
                      self.cfg.get("backup_every_n") or 0):
            if every:
                room = min(room, every - self.updates % every)
        if self.updates < self.pretrain_n:
            room = min(room, self.pretrain_n - self.updates)
        return room

    def _next_call(self, per_call: int) -> int:
        """Updates for the next call: `per_call` when all of them may run now and none passes a
        boundary (see _room), else 1 (so only two compiled shapes exist)."""
        if per_call > 1 and self._room(per_call) == per_call and self.may_update(per_call):
            return per_call
        return 1

    def _wait_for_frames(self) -> bool:
        self.set_phase(PHASE_WAITING_FOR_FRAMES)
        need = self.cfg["frames_before_learning"]
        while self.frames() < max(need, 1):
            runtime.beat()
            if self.stop.is_set() or self.finish.wait(0.05):
                if self.stop.is_set() or self.frames() < max(need, 1):
                    return False
        return True

    def _open_replay(self) -> None:
        while self.replay is None:
            runtime.beat()
            if ReplayBuffer.exists(self.run.replay):
                self.replay = ReplayBuffer.open(self.run.replay)
            elif self.stop.wait(0.05):
                return

    def run_loop(self) -> None:
        objects = self.build()
        self.restore(objects)
        self._open_replay()
        if self.replay is None or not self._wait_for_frames() or not self.before_learning():
            self.save(objects)
            return
        epoch_every = self.cfg["epoch_every_n"]
        backup_every = self.cfg.get("backup_every_n") or 0
        batch_size = self.cfg["batch_size"]
        newest = self.cfg["replay_size"]
        free_running = self.cfg.get("frames_per_update") is False
        per_call = int(self.cfg.get("updates_per_call") or 1)
        self.set_phase(PHASE_UPDATING)
        saved = False  # a checkpoint after an update: the first-time work is done
        while not self.stop.is_set():
            runtime.beat()  # also while waiting for frames: a waiting learner is alive
            if not self.may_update():
                if self.finish.is_set():
                    break  # every update owed for the collected frames is done
                time.sleep(WAIT_SECONDS)
                continue
            if free_running and self.finish.is_set():
                break
            n = self._next_call(per_call)
            batch = self.replay.sample(batch_size * n, newest, self.rng)
            if n == 1:
                logs = self.update(batch)
            else:
                logs = self.update_many(type(batch)(
                    *(field.reshape(n, batch_size, *field.shape[1:]) for field in batch)))
            self.updates += n
            self._publish()
            runtime.holding_work()  # updates to save: SIGTERM no longer ends this process at once
            self._record(logs, n)
            if self.updates % epoch_every == 0 or self.updates == self.pretrain_n:
                self.epoch += 1
                self.on_epoch()
                self.save(objects)
                self._publish()
                if not saved:
                    saved = True
                    runtime.started()  # compiled, logged and checkpointed once
            if backup_every and self.updates % backup_every == 0:
                self.backup()
        self.save(objects)
        self._publish()
        self.log_line(f"hours={self.hours:.4f} epoch={self.epoch} updates={self.updates} "
                      f"frames={self.frames()} final checkpoint")


def horizon_histogram(tag: str, profile: np.ndarray) -> None:
    """Write `profile` [H+1] (a value per horizon j) as one TensorBoard histogram whose bucket j
    spans [j - 0.5, j + 0.5] and holds profile[j]: TensorBoard's histogram view then shows how
    the mass moves between horizons as training goes on. Needs a default summary writer."""
    import tensorflow as tf
    from tensorboard.plugins.histogram import metadata

    j = np.arange(len(profile), dtype=np.float64)
    buckets = np.stack([j - 0.5, j + 0.5, np.asarray(profile, np.float64)], axis=1)  # [H+1, 3]
    tf.summary.write(tag, tf.constant(buckets, tf.float64),
                     metadata=metadata.create_summary_metadata(display_name=tag, description=(
                         "bucket j (from j - 0.5 to j + 0.5) holds the value for horizon j")))


def flat_config(config: dict, prefix: str = "") -> dict[str, bool | int | float | str]:
    """The config's leaves as {"policy_config.learning_rate": 0.0003, ...}; lists become text."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        elif value is not None:
            out[name] = json.dumps(value)
    return out


def write_config_summaries(writer, config: dict, step: int) -> None:
    """The resolved config as TensorBoard text (`config`, the JSON of log/hps.json) and as
    hparams (one per leaf, for the HPARAMS tab)."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hparams

    text = json.dumps(config, indent=2, sort_keys=True)
    with writer.as_default(step=step):
        tf.summary.text("config", "```json\n" + text + "\n```")
        hparams.hparams(flat_config(config))
    writer.flush()


def run_learner(spec: ProcessSpec, stop, finish) -> None:
    """Entry function of a learner process (policy or world model)."""
    import nn

    nn.configure_tensorflow(spec.threads)
    spec.implementation()(spec, stop, finish).run_loop()
