"""The role table and the frame-ratio rule of roles.py, which the learners and interactors share."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import roles
from roles import Ratio, frame_ratio, learners_behind

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


def test_learners_behind_asks_every_learner_of_the_config():
    config = {"policy_config": RATIO_4, "model_config": PRETRAIN_10}
    updates = {"policy": 0, "worldmodel": 10}
    assert not learners_behind(config, 100, updates.get, 0)
    assert learners_behind(config, 101, updates.get, 0)
    updates = {"policy": 5, "worldmodel": 3}  # the world model is still pretraining
    assert learners_behind(config, 101, updates.get, 0)
    # A model-free config has no world-model learner to wait for.
    assert not learners_behind(dict(config, model_config=None), 101, updates.get, 0)
    free = dict(RATIO_4, frames_per_update=False)
    assert not learners_behind({"policy_config": free}, 10**6, {"policy": 0}.get, 0)


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
    tree = ast.parse((ROOT / "roles.py").read_text())
    project = {p.stem for p in ROOT.glob("*.py")}
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & (project - {"roles"})


def test_acting_processes_do_not_import_the_learner_loop():
    code = ("import sys, agent; "
            "print(sorted(m for m in ('learner', 'valuerl_learner', 'worldmodel_learner') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr
