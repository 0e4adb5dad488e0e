"""The role table and the frame-ratio rule of process/roles.py, which the learners and
interactors share."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from process import roles
from process.roles import Ratio, frame_ratio, learners_behind
from process.rundir import (
    PHASE_STARTING,
    PHASE_UPDATING,
    PHASE_WAITING_FOR_FRAMES,
    PHASE_WAITING_FOR_MODEL,
)

ROOT = Path(__file__).resolve().parent.parent

# frames_before_learning 100, then one update per 4 frames.
RATIO_4 = {"frames_before_learning": 100, "frames_per_update": 4}
PRETRAIN_10 = dict(RATIO_4, pretrain_n=10)
QUARTER = {"frames_before_learning": 100, "frames_per_update": 0.25}  # 4 updates per frame

# (what it shows, frames, updates, config block, n (updates_per_call), slack,
#  may_update, must_wait)
CASES = [
    ("warm-up: no frame owed yet", 100, 0, RATIO_4, 1, 0, False, False),
    ("the first frame owed allows update 0", 101, 0, RATIO_4, 1, 0, True, True),
    ("update 1 needs more than 4 frames owed", 104, 1, RATIO_4, 1, 0, False, False),
    ("5 frames owed allow update 1", 105, 1, RATIO_4, 1, 0, True, True),
    ("the slack: behind by the frames in flight is not behind", 109, 1, RATIO_4, 1, 8,
     True, False),
    ("the slack: one frame more is", 113, 1, RATIO_4, 1, 8, True, True),
    ("the slack: exactly at the slack is not", 112, 1, RATIO_4, 1, 8, True, False),
    ("pretraining is unthrottled", 100, 3, PRETRAIN_10, 1, 0, True, False),
    ("pretraining: interactors wait once a frame is owed", 101, 3, PRETRAIN_10, 1, 0,
     True, True),
    ("pretraining: ... or once the slack is exceeded", 108, 3, PRETRAIN_10, 1, 8, True, False),
    ("pretraining: slack exceeded", 109, 3, PRETRAIN_10, 1, 8, True, True),
    ("after pretraining the count starts again at 0", 101, 10, PRETRAIN_10, 1, 0, True, True),
    ("after pretraining, update 1 of the ratio", 104, 11, PRETRAIN_10, 1, 0, False, False),
    ("after pretraining, update 1 allowed", 105, 11, PRETRAIN_10, 1, 0, True, True),
    ("updates per call: the last of 4 must be allowed", 112, 0, RATIO_4, 4, 0, False, True),
    ("updates per call: all 4 allowed", 113, 0, RATIO_4, 4, 0, True, True),
    ("updates per call within pretraining", 100, 6, PRETRAIN_10, 4, 0, True, False),
    ("updates per call across the end of pretraining", 104, 8, PRETRAIN_10, 4, 0,
     False, True),
    ("updates per call across the end of pretraining, allowed", 105, 8, PRETRAIN_10, 4, 0,
     True, True),
    ("a fractional ratio: 4 updates per frame", 101, 3, QUARTER, 1, 0, True, True),
    ("a fractional ratio: the fifth needs a second frame", 101, 4, QUARTER, 1, 0,
     False, False),
    ("free-running (false) never waits", 0, 10**6, dict(RATIO_4, frames_per_update=False),
     4, 0, True, False),
    ("free-running (no key) never waits", 0, 10**6, {"frames_before_learning": 100}, 1, 0,
     True, False),
]


@pytest.mark.parametrize("what, frames, updates, cfg, n, slack, may_update, must_wait", CASES,
                         ids=[case[0] for case in CASES])
def test_frame_ratio(what, frames, updates, cfg, n, slack, may_update, must_wait):
    assert frame_ratio(frames, updates, cfg, n, slack) == Ratio(may_update, must_wait)


def _nobody(name):
    return False  # no learner waits for another


def test_learners_behind_asks_every_learner_of_the_config():
    config = {"policy_config": RATIO_4, "model_config": PRETRAIN_10}
    updates = {"policy": 0, "worldmodel": 10}
    assert not learners_behind(config, 100, updates.get, _nobody, 0)
    assert learners_behind(config, 101, updates.get, _nobody, 0)
    updates = {"policy": 5, "worldmodel": 3}  # the world model is still pretraining
    assert learners_behind(config, 101, updates.get, _nobody, 0)
    # A model-free config has no world-model learner to wait for.
    assert not learners_behind(dict(config, model_config=None), 101, updates.get, _nobody, 0)
    free = dict(RATIO_4, frames_per_update=False)
    assert not learners_behind({"policy_config": free}, 10**6, {"policy": 0}.get, _nobody, 0)


def test_a_learner_waiting_for_another_holds_no_one():
    # The policy learner waits for the world model, whose warm-up (400) is the later one: the
    # policy's 16 frames owed must not stop the frames the world model waits for.
    config = {"policy_config": RATIO_4, "model_config": dict(PRETRAIN_10,
                                                             frames_before_learning=400)}
    updates = {"policy": 0, "worldmodel": 0}
    policy_waits = {"policy": True, "worldmodel": False}.get
    assert learners_behind(config, 116, updates.get, _nobody, 0)
    assert not learners_behind(config, 116, updates.get, policy_waits, 0)
    assert learners_behind(config, 401, updates.get, policy_waits, 0)  # the model's own ratio


# ------------------------------------------------------------------ the rule, live
#
# The interactors and learners of a run as a small state machine over the real functions of
# process/roles.py (learners_behind, frame_ratio, learners), one move = one step of one process
# as the code takes it:
# - an interactor (agent.run_interactor) first checks learners_behind, which, passed, puts one
#   step in flight, and later appends it (batch_size frames); the two are separate moves, so
#   every interactor's step may be in flight at once (the slack);
# - a learner (learner.Learner.run_loop) starts, waits for max(frames_before_learning, 1)
#   frames, then (the policy learner of a model-based config: valuerl_learner.before_learning)
#   waits for a world-model checkpoint that finished pretraining, then updates whenever
#   frame_ratio's may_update allows; the world model checkpoints when its update count is a
#   multiple of epoch_every_n or equals pretrain_n.
# A run is stuck when no move is possible: every interactor waits and no learner can move.


class Run:
    def __init__(self, config: dict, waiting_for_learner=None):
        self.config = config
        self.blocks = {r.name: config[r.config_block] for r in roles.learners(config)}
        self.model_based = roles.WORLDMODEL in self.blocks
        ac = config["agent_config"]
        self.batch, self.slack = ac["batch_size"], ac["batch_size"] * ac["count"]
        self.in_flight = [False] * ac["count"]
        self.frames = 0
        self.updates = dict.fromkeys(self.blocks, 0)
        self.phase = dict.fromkeys(self.blocks, PHASE_STARTING)
        self.model_checkpoint = None  # the updates in the world model's newest checkpoint
        # The rule under test; rundir.Progress.waiting_for_learner reads the same phase.
        self.waiting_for_learner = waiting_for_learner or (
            lambda name: self.phase[name] == PHASE_WAITING_FOR_MODEL)

    def interactor_moves(self) -> list[int]:
        behind = learners_behind(self.config, self.frames, self.updates.__getitem__,
                                 self.waiting_for_learner, self.slack)
        return [i for i, flying in enumerate(self.in_flight) if flying or not behind]

    def interactor_move(self, i: int) -> None:
        if self.in_flight[i]:
            self.frames += self.batch
        self.in_flight[i] = not self.in_flight[i]

    def learner_moves(self) -> list[str]:
        return [name for name in self.blocks if self._may_move(name)]

    def _may_move(self, name: str) -> bool:
        cfg, phase = self.blocks[name], self.phase[name]
        if phase == PHASE_WAITING_FOR_FRAMES:
            return self.frames >= max(cfg["frames_before_learning"], 1)
        if phase == PHASE_WAITING_FOR_MODEL:
            pretrain = int(self.blocks[roles.WORLDMODEL].get("pretrain_n") or 0)
            return self.model_checkpoint is not None and self.model_checkpoint >= pretrain
        if phase == PHASE_UPDATING:
            return frame_ratio(self.frames, self.updates[name], cfg).may_update
        return True  # starting

    def learner_move(self, name: str) -> None:
        phase = self.phase[name]
        if phase == PHASE_STARTING:
            self.phase[name] = PHASE_WAITING_FOR_FRAMES
        elif phase == PHASE_WAITING_FOR_FRAMES:
            waits = name == roles.POLICY and self.model_based
            self.phase[name] = PHASE_WAITING_FOR_MODEL if waits else PHASE_UPDATING
        elif phase == PHASE_WAITING_FOR_MODEL:
            self.phase[name] = PHASE_UPDATING
        else:
            self.updates[name] += 1
            cfg, u = self.blocks[name], self.updates[name]
            if name == roles.WORLDMODEL and (
                    u % cfg["epoch_every_n"] == 0 or u == int(cfg.get("pretrain_n") or 0)):
                self.model_checkpoint = u

    def play(self, rng, eager: bool, horizon: int, max_moves: int = 200_000) -> str | None:
        """Move until `horizon` frames are in and every learner updates; None, or how the run
        got stuck. `eager`: up to `horizon` frames, interactors move whenever they can
        (learners as slow as possible); otherwise a random process of those that can move."""
        for _ in range(max_moves):
            if self.frames >= horizon and all(p == PHASE_UPDATING for p in self.phase.values()):
                return None
            acting, learning = self.interactor_moves(), self.learner_moves()
            if not acting and not learning:
                return (f"stuck at {self.frames} frames: updates {self.updates}, phases "
                        f"{self.phase}, world-model checkpoint {self.model_checkpoint}")
            first = eager and acting and self.frames < horizon
            k = int(rng.integers(len(acting) if first else len(acting) + len(learning)))
            if k < len(acting):
                self.interactor_move(acting[k])
            else:
                self.learner_move(learning[k - len(acting)])
        raise AssertionError(f"no end after {max_moves} moves: {self.frames} frames, "
                             f"{self.updates}, {self.phase}")


def random_settings(rng) -> dict:
    """Valid settings (config.py accepts them) of the parts of a config the rule reads."""
    def learner() -> dict:
        ratios = [False, 0.25, 0.5, 1, 1, 2, 4, round(float(rng.uniform(0.3, 5)), 3)]
        return {"frames_before_learning": int(rng.integers(0, 300)),
                "frames_per_update": ratios[int(rng.integers(len(ratios)))]}

    config = {"policy_config": learner(),
              "agent_config": {"count": int(rng.integers(1, 4)),
                               "batch_size": int(rng.integers(1, 9))}}
    if rng.random() < 0.75:  # two learners
        model = dict(learner(), epoch_every_n=int(rng.integers(1, 40)),
                     pretrain_n=[False, 0, int(rng.integers(1, 60))][int(rng.integers(3))])
        if rng.random() < 0.3:
            model["frames_before_learning"] = config["policy_config"]["frames_before_learning"]
        config["model_config"] = model
    return config


def horizon(config: dict) -> int:
    ac = config["agent_config"]
    warmup = max(b["frames_before_learning"] for b in
                 (config["policy_config"], config.get("model_config") or {}) if b)
    return warmup + 2 * ac["batch_size"] * ac["count"] + 10


# The quick-start STEVE config with the world model's warm-up raised to 4,000 frames (the
# reported deadlock: the interactors stopped at 2,016 frames).
QUICKSTART_LATE_MODEL = {
    "policy_config": {"frames_before_learning": 2000, "frames_per_update": 0.25},
    "model_config": {"frames_before_learning": 4000, "frames_per_update": 0.25,
                     "pretrain_n": 1000, "epoch_every_n": 250},
    "agent_config": {"count": 1, "batch_size": 8},
}


def test_no_reachable_state_has_the_interactors_waiting_for_no_one():
    rng = np.random.default_rng(20240601)
    for case in range(2500):
        config = random_settings(rng)
        eager = case % 2 == 0
        stuck = Run(config).play(rng, eager, horizon(config))
        assert stuck is None, f"case {case} ({'eager' if eager else 'random'}): {config}: {stuck}"


def test_the_late_world_model_runs_and_the_old_rule_deadlocked():
    rng = np.random.default_rng(0)
    assert Run(QUICKSTART_LATE_MODEL).play(rng, True, 4100) is None
    # The rule before the fix (every learner behind holds the interactors) got stuck where the
    # report said; the search above has teeth.
    old = Run(QUICKSTART_LATE_MODEL, waiting_for_learner=_nobody).play(rng, True, 4100)
    assert old is not None and old.startswith("stuck at 2016 frames")
    found = 0
    for _ in range(300):
        config = random_settings(rng)
        found += Run(config, waiting_for_learner=_nobody).play(rng, True,
                                                               horizon(config)) is not None
    assert found


def test_the_table_names_every_role_once():
    assert [r.name for r in roles.TABLE] == ["policy", "worldmodel", "interactor", "evaluator"]
    assert roles.LEARNERS == ("policy", "worldmodel")
    assert [roles.ROLE[name].process_name(2) for name in roles.ROLE] == [
        "policy-learner", "worldmodel-learner", "interactor-2", "evaluator-2"]
    assert [roles.ROLE[name].tensorboard_name(2) for name in roles.ROLE] == [
        "policy", "worldmodel", "interactor-2", "evaluator-2"]
    # The 2018 names on disk.
    assert (roles.ROLE["policy"].log, roles.ROLE["policy"].checkpoint_key) == (
        "valuerl.log", "valuerl")
    assert (roles.ROLE["worldmodel"].log, roles.ROLE["worldmodel"].checkpoint_key) == (
        "worldmodel.log", "worldmodel")
    with pytest.raises(ValueError, match="unknown process role 'learner'"):
        roles.role("learner")


def test_every_entry_and_implementation_exists():
    for row in roles.TABLE:
        assert callable(roles.load(row.entry)), row.entry
        assert isinstance(roles.load(row.impl), type), row.impl


def test_counts_follow_the_config():
    config = {"agent_config": {"count": 3}, "evaluator_config": {"count": 2}}
    assert [r.count(config, True) for r in roles.TABLE] == [1, 1, 3, 2]
    assert [r.count(config, False) for r in roles.TABLE] == [1, 0, 3, 2]


def test_roles_imports_no_module_of_the_project():
    tree = ast.parse((ROOT / "process/roles.py").read_text())
    project = {p.stem for p in ROOT.glob("*.py")} | {
        p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & project


def test_acting_processes_do_not_import_the_learner_loop():
    code = ("import sys; from process import actors; "
            "print(sorted(m for m in ('learner', 'valuerl_learner', 'worldmodel_learner') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr
