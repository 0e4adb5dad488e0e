"""Helpers for the tests that run master.py: as a child process, or over the counting pipeline.

- `run_master(*args)`: `python master.py ARGS` in the repository, with `.` and `tests/` on the
  child's PYTHONPATH (so configs may name `pipeline_stubs` classes); returns the CompletedProcess.
- `counters(run, role)`: the counters of the run's latest checkpoint of that role.
- `counting_config(tmp_path, **policy)`: a config for pipeline_stubs' counting environment, run
  with `master.main(argv, impl=IMPL)` so the learner is pipeline_stubs' StubLearner; MAX_FRAMES,
  FBL and RATIO are its episode cap, warm-up frames and frames per update.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

IMPL = {"policy": "pipeline_stubs:StubLearner"}
MAX_FRAMES = 10
FBL = 40
RATIO = 0.5


def run_master(*args, env=None, timeout=300, cwd=ROOT):
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS)])
    return subprocess.run([sys.executable, str(ROOT / "master.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)


def counters(run: Path, role: str = "policy") -> dict:
    """The counters of a run's latest checkpoint of `role` (from its latest.json pointer)."""
    return json.loads((run / f"checkpoints/{role}/latest.json").read_text())["counters"]


def counting_config(tmp_path: Path, **policy) -> Path:
    path = tmp_path / "counting.json"
    path.write_text(json.dumps({
        "inherits": [str(ROOT / "config/algos/ddpg.json")],
        "updates": {
            "env": {"name": "pipeline_stubs:Counting-v0", "obs_dims": 2, "action_dims": 1,
                    "reward_scale": 1.0, "discount": 0.99, "max_frames": MAX_FRAMES},
            "agent_config": {"count": 2, "batch_size": 3, "full_random_n": 60},
            "evaluator_config": {"count": 1, "batch_size": 2},
            "policy_config": {"batch_size": 16, "replay_size": 1000, "frames_before_learning": FBL,
                              "log_every_n": 10, "epoch_every_n": 20, "backup_every_n": 200,
                              "frames_per_update": RATIO, **policy},
        },
    }))
    return path
