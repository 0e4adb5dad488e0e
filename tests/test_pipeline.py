"""The whole process topology with a counting environment and a learner without networks.

master.main runs in this process; its children (learner, interactors, evaluator) are real spawned
processes running the real learner loop, interactor and evaluator code. pipeline_stubs checks
every sampled batch inside the learner; here we check what the run left on disk.
"""

import json
import math

import numpy as np
import pytest

import master
from master_runs import FBL, IMPL, MAX_FRAMES, RATIO, counting_config
from pipeline_stubs import TERMINATE_AT
from replay import ReplayBuffer

pytestmark = pytest.mark.slow  # every test runs the whole process topology


def owed_updates(frames: int) -> int:
    """Updates the learner must have done when it stops: u with frames - FBL > RATIO * (u - 1)."""
    return math.ceil((frames - FBL) / RATIO)


def test_pipeline_counting_env_and_resume(tmp_path):
    cfg = counting_config(tmp_path)
    out = tmp_path / "out"
    argv = [str(cfg), "0", "--output-root", str(out), "--total-frames", "300", "--seed", "3"]
    assert master.main(argv, impl=IMPL) == 0
    run = out / "pipeline_stubs_Counting-v0" / "counting.seed3"
    finished = json.loads((run / "state/finished.json").read_text())
    frames = finished["frames"]
    assert 300 <= frames < 300 + 2 * 3  # at most one step of each interactor past the budget
    assert finished["policy_updates"] == owed_updates(frames)

    # Every stored frame (not only the sampled ones): consecutive, terminal only at a real end.
    replay = ReplayBuffer.open(run / "replay")
    everything = replay.sample(20000, 10**6, np.random.default_rng(0))
    t, t1 = everything.obs[:, 0], everything.next_obs[:, 0]
    assert np.all(t1 == t + 1)
    truncated = t1 == MAX_FRAMES
    assert truncated.any() and np.all(everything.terminal[truncated] == 0)
    ended = everything.terminal == 1
    assert ended.any() and np.all(t1[ended] == TERMINATE_AT)
    assert set(np.unique(everything.action)) >= {0.5}  # the policy acted after full_random_n

    # Saves happened: epochs every 20 updates, numbered backups every 200.
    counters = json.loads((run / "checkpoints/policy/latest.json").read_text())["counters"]
    assert counters["updates"] == finished["policy_updates"]
    assert counters["epoch"] == finished["policy_updates"] // 20
    assert (run / "checkpoints/backups/policy/200").is_dir()
    assert "resumed" not in (run / "log/valuerl.log").read_text()
    rows = (run / "log/counting.seed3.greedy.csv").read_text().splitlines()
    assert rows and all(len(r.split(",")) == 4 for r in rows)
    hps = json.loads((run / "log/hps.json").read_text())
    assert hps["seed"] == 3 and hps["name"] == "counting.seed3"

    # Resume for more frames: loads exactly once, counters and greedy.csv continue.
    argv2 = [str(cfg), "0", "--output-root", str(out), "--total-frames", "500", "--seed", "3",
             "--resume"]
    assert master.main(argv2, impl=IMPL) == 0
    log = (run / "log/valuerl.log").read_text()
    assert log.count("resumed from") == 1
    finished2 = json.loads((run / "state/finished.json").read_text())
    assert finished2["frames"] >= 500
    assert finished2["policy_updates"] == owed_updates(finished2["frames"])
    counters2 = json.loads((run / "checkpoints/policy/latest.json").read_text())["counters"]
    assert counters2["epoch"] >= counters["epoch"] + (500 - 300) / RATIO // 20 - 1
    assert counters2["hours"] > counters["hours"]
    rows2 = (run / "log/counting.seed3.greedy.csv").read_text().splitlines()
    assert rows2[: len(rows)] == rows and len(rows2) > len(rows)


def test_several_updates_per_call_keep_the_ratio_and_the_boundaries(tmp_path):
    # updates_per_call 4: calls of 4 updates where they fit (the stub checks each one: all 4
    # allowed, no log/epoch/backup boundary passed), single updates elsewhere; the totals are
    # exactly those of one update per call.
    cfg = counting_config(tmp_path, updates_per_call=4, log_every_n=10, epoch_every_n=20)
    out = tmp_path / "out"
    argv = [str(cfg), "0", "--output-root", str(out), "--total-frames", "200", "--seed", "1"]
    assert master.main(argv, impl=IMPL) == 0
    run = out / "pipeline_stubs_Counting-v0" / "counting.seed1"
    finished = json.loads((run / "state/finished.json").read_text())
    assert finished["policy_updates"] == owed_updates(finished["frames"])
    counters = json.loads((run / "checkpoints/policy/latest.json").read_text())["counters"]
    assert counters["epoch"] == finished["policy_updates"] // 20
    lines = [ln for ln in (run / "log/valuerl.log").read_text().splitlines() if "updates=" in ln
             and "stub/chunked=" in ln]
    updates = [int(ln.split("updates=")[1].split()[0]) for ln in lines]
    assert updates == list(range(10, 10 * len(updates) + 1, 10))  # a line every 10 updates
    chunked = [float(ln.split("stub/chunked=")[1].split()[0]) for ln in lines]
    assert max(chunked) >= 0.8  # most updates ran 4 to a call (10 = 4 + 4 + 1 + 1 at best)
