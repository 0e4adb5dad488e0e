"""Stand-ins for the pipeline test: a counting environment and a learner without networks.

The environment's observation is [t, episode id]: t counts steps within the episode. Episodes
with an even id terminate at t = TERMINATE_AT; the others run until the config's max_frames cuts
them (a truncation). So every stored transition must have next t = t + 1, a terminal flag only at
t + 1 = TERMINATE_AT of an even episode, and none at a truncation.

`StubLearner` checks those facts on every batch it samples, and the frames_per_update ratio on
every update, and raises (killing its process, failing the run) on any violation.
`FullDiskLearner` is a StubLearner whose checkpoint saves find the disk full (ENOSPC) from
FULL_DISK_AT updates on, while that environment variable is set, and which allows for the frames
owed after a resume from a checkpoint older than the crash. `SlowStartLearner` is a StubLearner
whose start-up lasts minutes (a stand-in for importing TensorFlow on a loaded machine).
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import gymnasium
import numpy as np

from learner import Learner

TERMINATE_AT = 7
ENV_ID = "Counting-v0"


class CountingEnv(gymnasium.Env):
    def __init__(self):
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gymnasium.spaces.Box(-2.0, 2.0, (1,), np.float32)
        self._episode = -1
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            # distinct ids per env instance, exact in float32 (below 2**24)
            self._episode = (int(seed) % 8192) * 1024
        self._episode += 1
        self._t = 0
        return self._obs(), {}

    def _obs(self):
        return np.array([self._t, self._episode], dtype=np.float32)

    def step(self, action):
        self._t += 1
        terminated = self._episode % 2 == 0 and self._t == TERMINATE_AT
        return self._obs(), float(self._t), terminated, False, {}


if ENV_ID not in gymnasium.registry:
    gymnasium.register(ENV_ID, entry_point=CountingEnv)


def check_batch(batch, max_frames: int) -> None:
    t, ep = batch.obs[:, 0], batch.obs[:, 1]
    t1, ep1 = batch.next_obs[:, 0], batch.next_obs[:, 1]
    assert np.all(ep1 == ep), "a transition crosses episodes"
    assert np.all(t1 == t + 1), f"non-consecutive transition: {t[t1 != t + 1]}"
    assert np.all(batch.reward == t1), "reward is not the step index"
    should_end = (ep % 2 == 0) & (t1 == TERMINATE_AT)
    assert np.all(batch.terminal == should_end.astype(np.float32)), "wrong terminal flag"
    assert np.all(t1 <= max_frames), "an episode ran past max_frames"
    assert np.all((batch.action >= -1) & (batch.action <= 1)), "action outside [-1, 1]"


class StubActor:
    def __init__(self, config, seed):
        self.action_dims = config["env"]["action_dims"]

    def restore(self, path):
        return json.loads((Path(path) / "counters.json").read_text())

    def greedy_action(self, obs):
        return np.zeros((len(obs), self.action_dims), np.float32)

    def explore_action(self, obs, explore_chance):
        return np.full((len(obs), self.action_dims), 0.5, np.float32)


class StubLearner(Learner):
    role = "policy"

    def build(self):
        self.seen_terminal = self.seen_truncation = 0
        return {}

    def update(self, batch):
        check_batch(batch, self.config["env"]["max_frames"])
        ratio = self.cfg["frames_per_update"]
        frames = self.frames()
        owed = frames - self.cfg["frames_before_learning"]
        assert owed > ratio * self.updates, "the learner ran ahead of frames_per_update"
        # Interactors pause when the learner falls behind; one step of each may be in flight.
        assert owed <= ratio * self.updates + self.lead_allowed(), \
            f"interactors ran ahead: {owed} frames owed at {self.updates} updates"
        return {"stub/terminals": float(batch.terminal.sum()), "stub/chunked": 0.0}

    def update_many(self, batches):
        n = len(batches.reward)
        assert n == self.cfg["updates_per_call"], f"a call of {n} updates"
        assert self._room(n) == n, "a call of several updates passed a log, epoch or backup"
        assert self.may_update(n), "a call of several updates ran ahead of frames_per_update"
        logs = super().update_many(batches)
        return dict(logs, **{"stub/chunked": 1.0})

    def lead_allowed(self) -> float:
        """How many frames beyond the ratio may be owed: one step of each interactor in flight,
        seen on both sides of a pause."""
        ac = self.config["agent_config"]
        return 2 * ac["batch_size"] * ac["count"] + 1

    @staticmethod
    def make_actor(config, seed):
        return StubActor(config, seed)


class StubModelLearner(StubLearner):
    """The same stand-in in the world-model learner's seat (for model-based topologies)."""

    role = "worldmodel"


FULL_DISK_AT = "STEVE_TEST_FULL_DISK_AT"  # environment: saves from this many updates on fail


class FullDiskLearner(StubLearner):
    """A StubLearner whose saves raise what a write on a full disk raises (OSError ENOSPC,
    naming its checkpoint folder) once it has FULL_DISK_AT updates, while that variable is set
    (spawned children inherit the test's environment)."""

    def lead_allowed(self) -> float:
        # A start after the crash resumes from a checkpoint older than the frames: those
        # collected for the updates lost are owed too, until the learner catches up.
        if not hasattr(self, "_lost"):  # the first update of this start
            self._lost = max(0.0, self.frames() - self.cfg["frames_before_learning"]
                             - self.cfg["frames_per_update"] * self.updates)
        return super().lead_allowed() + self._lost

    def save(self, objects):
        at = os.environ.get(FULL_DISK_AT)
        if at is not None and self.updates >= int(at):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                          str(self.run.checkpoint_dir(self.role)))
        super().save(objects)


SLOW_START = "slow start-up: building"  # what SlowStartLearner prints to its .out, then sleeps


class SlowStartLearner(StubLearner):
    """A StubLearner whose build() takes SLOW_START_SECONDS (a start-up under heavy load)."""

    SLOW_START_SECONDS = 300.0

    def build(self):
        print(SLOW_START, flush=True)
        time.sleep(self.SLOW_START_SECONDS)
        return super().build()
