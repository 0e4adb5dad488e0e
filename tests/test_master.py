"""master.py end to end: real runs of tiny configs, resume, a killed child, bad inputs, devices."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import master
from master_runs import counters, counting_config, run_master
from process import devices, preflight
from util import process_alive, process_cmdline, process_descendants

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TINY_DDPG = TESTS / "configs/tiny_ddpg.json"
TINY_STEVE = TESTS / "configs/tiny_steve.json"


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its size and modification time."""
    if not folder.exists():
        return {}
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def child_pid(out: Path) -> int:
    """A child's pid, from the first line it writes to its log/<process>.out."""
    words = out.read_text().split()
    return int(words[words.index("(pid") + 1].rstrip("):"))


def start_slow_start_master(tmp_path: Path, **popen) -> tuple[subprocess.Popen, Path]:
    """master.py on the counting config with SlowStartLearner (a start-up of minutes), and
    the run's log folder."""
    code = ("import sys, master; sys.exit(master.main(sys.argv[1:], "
            "impl={'policy': 'pipeline_stubs:SlowStartLearner'}))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]))
    proc = subprocess.Popen([sys.executable, "-c", code, str(counting_config(tmp_path)), "0",
                             "--output-root", str(tmp_path)], cwd=ROOT, env=env, **popen)
    return proc, tmp_path / "pipeline_stubs_Counting-v0/counting/log"


def kill_all(proc: subprocess.Popen, family: list[int]) -> None:
    """A test's clean-up: kill the master and whatever of its family still lives."""
    if proc.poll() is None:
        proc.kill()
    for p in family:
        if process_alive(p):
            os.kill(p, signal.SIGKILL)


@pytest.mark.slow
def test_tiny_ddpg_run_and_resume(tmp_path):
    out = run_master(TINY_DDPG, 0, "--total-frames", 300, "--output-root", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "InvertedPendulum-v5" / "tiny_ddpg"
    for rel in ("log/hps.json", "log/valuerl.log", "log/tiny_ddpg.greedy.csv",
                "checkpoints/policy/latest.json", "replay", "state/finished.json",
                "tensorboard/policy", "tensorboard/evaluator-0"):
        assert (run / rel).exists(), rel
    assert not (run / "log/worldmodel.log").exists()
    assert json.loads((run / "log/hps.json").read_text())["env"]["name"] == "InvertedPendulum-v5"
    rows = (run / "log/tiny_ddpg.greedy.csv").read_text().splitlines()
    assert rows and all(len(r.split(",")) == 4 for r in rows)
    assert "frames " in out.stdout and "updates/frame" in out.stdout
    from tensorboard.backend.event_processing import event_accumulator

    board = event_accumulator.EventAccumulator(str(run / "tensorboard/policy"))
    tags = set(board.Reload().Tags()["tensors"])
    assert {"losses/q", "charts/mean_q", "charts/learning_rate/q", "config"} <= tags
    assert not [t for t in tags if t.startswith("steve/") or "average_model_use" in t]  # DDPG
    first = counters(run)
    finished = json.loads((run / "state/finished.json").read_text())
    assert first["updates"] == finished["policy_updates"] == finished["frames"] - 100

    again = run_master(TINY_DDPG, 0, "--total-frames", 500, "--output-root", tmp_path,
                       "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    second = counters(run)
    assert second["updates"] > first["updates"] and second["epoch"] > first["epoch"]
    assert second["frames"] >= 500 and second["hours"] > first["hours"]
    rows2 = (run / "log/tiny_ddpg.greedy.csv").read_text().splitlines()
    assert rows2[: len(rows)] == rows and len(rows2) > len(rows)
    assert (run / "log/valuerl.log").read_text().count("resumed from") == 1

    # The learning-curve command draws this real run.
    import plot

    written = plot.plot_runs(plot.find_runs([tmp_path]), tmp_path / "curve.png")
    assert len(written) == 2
    for path in written:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert Path(path).stat().st_size > 10_000


@pytest.mark.slow
def test_tiny_steve_run(tmp_path):
    out = run_master(TINY_STEVE, 0, "--total-frames", 300, "--output-root", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "InvertedPendulum-v5" / "tiny_steve"
    assert "model updates" in out.stdout
    model = counters(run, "worldmodel")
    policy = counters(run, "policy")
    assert model["updates"] >= 20 + 300 - 100  # pretraining, then one update per frame
    assert policy["updates"] == 300 - 100
    log = (run / "log/valuerl.log").read_text()
    assert "charts/average_model_use" in log
    assert "wm/" in (run / "log/worldmodel.log").read_text()


@pytest.mark.slow
def test_a_world_model_warming_up_after_the_policy_learner_runs_to_its_budget(tmp_path):
    # The world model's warm-up (200 frames) is above the policy learner's (100). The policy
    # learner waits for the world model from frame 100 on; that wait used to hold the
    # interactors at 104 frames while the world model waited for 200: a deadlock.
    config = tmp_path / "late_model.json"
    config.write_text(json.dumps({"inherits": [str(TINY_STEVE)],
                                  "updates": {"model_config": {"frames_before_learning": 200}}}))
    out = run_master(config, 0, "--total-frames", 260, "--output-root", tmp_path, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "InvertedPendulum-v5" / "late_model"
    finished = json.loads((run / "state/finished.json").read_text())
    assert finished["frames"] == 260
    assert counters(run, "worldmodel")["updates"] >= 20 + 260 - 200  # pretraining, then 1/frame
    assert counters(run, "policy")["updates"] == finished["policy_updates"] == 260 - 100


@pytest.mark.slow
def test_killed_child_stops_everything(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(ROOT / "master.py"), str(TINY_DDPG), "0",
                             "--output-root", str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run = tmp_path / "InvertedPendulum-v5" / "tiny_ddpg"
        deadline = time.time() + 120
        while not (run / "checkpoints/policy/latest.json").exists():  # everything is running
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.5)
        family = process_descendants(proc.pid)
        workers = [p for p in family
                   if "spawn_main" in process_cmdline(p)]
        assert len(workers) == 3  # policy learner, interactor, evaluator
        os.kill(workers[0], signal.SIGKILL)
        killed_at = time.time()
        _, stderr = proc.communicate(timeout=60)
        assert time.time() - killed_at < 20
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode not in (0, None)
    assert "was killed by SIGKILL" in stderr
    time.sleep(1)
    assert not [p for p in family if process_alive(p)]


@pytest.mark.slow
def test_a_stalled_child_is_named_and_the_run_stopped(tmp_path):
    # SIGSTOP stands in for a hung GPU call or a dead network mount: the policy learner stays
    # alive but runs no code. The counting pipeline's stub learner keeps the run small.
    code = ("import sys, master, master_runs; "
            "sys.exit(master.main(sys.argv[1:], impl=master_runs.IMPL))")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]))
    proc = subprocess.Popen([sys.executable, "-c", code, str(counting_config(tmp_path)), "0",
                             "--output-root", str(out), "--stall-timeout", "5"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = out / "pipeline_stubs_Counting-v0" / "counting"
    family, pid = [], None
    try:
        deadline = time.time() + 240
        # Two epochs (20 updates each): the first checkpoint is behind it, so it has started.
        while not ((run / "checkpoints/policy/latest.json").exists()
                   and counters(run)["updates"] >= 40):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
        family = process_descendants(proc.pid)
        pid = child_pid(run / "log/policy-learner.out")
        assert pid in family
        os.kill(pid, signal.SIGSTOP)
        _, stderr = proc.communicate(timeout=120)
    finally:
        kill_all(proc, [] if pid is None else [pid])
    assert proc.returncode == master.STALL_EXIT == 3, stderr[-3000:]
    assert f"error: policy-learner (pid {pid}) showed no sign of life for " in stderr
    assert "--stall-timeout 5" in stderr and "continue with --resume" in stderr
    time.sleep(1)
    assert not [p for p in family if process_alive(p)]


@pytest.mark.slow
def test_killed_master_leaves_no_orphan(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(ROOT / "master.py"), str(TINY_DDPG), "0",
                             "--output-root", str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "InvertedPendulum-v5" / "tiny_ddpg"
    deadline = time.time() + 120
    while not (run / "checkpoints/policy/latest.json").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.5)
    family = process_descendants(proc.pid)
    assert len(family) >= 3
    proc.kill()
    proc.wait()
    # Generous: on a loaded machine a learner may need a while to finish its current call and
    # write the final checkpoint; the loop ends as soon as the family is gone.
    deadline = time.time() + 120
    while [p for p in family if process_alive(p)] and time.time() < deadline:
        time.sleep(0.5)
    assert not [p for p in family if process_alive(p)]
    # The learner got SIGTERM from the kernel and wrote its final checkpoint.
    assert (run / "log/valuerl.log").read_text().strip().endswith("final checkpoint")


@pytest.mark.slow
def test_a_master_killed_during_start_up_leaves_no_child(tmp_path):
    """Children still in their start-up have nothing to save: the master's death ends them at
    once, in their TensorFlow import or in a start-up that would last minutes (SlowStartLearner,
    like a start-up on a loaded machine)."""
    proc, log = start_slow_start_master(tmp_path, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
    outs = [log / f"{name}.out" for name in
            ("policy-learner", "interactor-0", "interactor-1", "evaluator-0")]
    family: list[int] = []
    try:
        deadline = time.time() + 120
        # Every child has written its first line (its pid) and is importing TensorFlow.
        while not all(out.exists() and "(pid" in out.read_text() for out in outs):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
        family = process_descendants(proc.pid)
        assert len(family) >= 3
        proc.kill()
        proc.wait()
        deadline = time.time() + 10
        while [p for p in family if process_alive(p)] and time.time() < deadline:
            time.sleep(0.1)
        assert not [(p, process_cmdline(p)) for p in family if process_alive(p)]
    finally:
        kill_all(proc, family)


@pytest.mark.slow
def test_a_dead_child_ends_a_sibling_still_in_its_start_up(tmp_path):
    """A child dies while the policy learner is still starting (SlowStartLearner: minutes):
    the master sends SIGTERM, so the learner ends at once instead of when its start-up is over
    (or, before, when the master killed it GRACE_SECONDS later)."""
    from pipeline_stubs import SLOW_START

    proc, log = start_slow_start_master(tmp_path, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
    family: list[int] = []
    try:
        deadline = time.time() + 240
        while not ((log / "policy-learner.out").exists()
                   and SLOW_START in (log / "policy-learner.out").read_text()
                   and (log / "interactor-0.out").exists()
                   and "(pid" in (log / "interactor-0.out").read_text()):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.1)
        family = process_descendants(proc.pid)
        os.kill(child_pid(log / "interactor-0.out"), signal.SIGKILL)
        _, stderr = proc.communicate(timeout=180)
    finally:
        kill_all(proc, family)
    assert proc.returncode == 1, stderr[-3000:]
    assert "error: interactor-0 was killed by SIGKILL" in stderr
    assert "did not stop within" not in stderr  # nobody waited for the grace period to end
    assert "SIGTERM during its start-up, nothing to save" in (
        log / "policy-learner.out").read_text()


def _starting_child(flag, ready, saved, holding):
    """A child as runtime.child_main sets it up: in its start-up, which does not look at `stop`
    (`flag`), or past it (`holding`), where its loop ends on `stop` and it saves its work."""
    from process import runtime

    runtime._stop = flag
    signal.signal(signal.SIGTERM, runtime._on_sigterm("test-child"))
    if not holding:
        ready.set()
        time.sleep(300)
        return
    runtime.holding_work()
    ready.set()
    flag.wait()
    saved.set()


@pytest.mark.slow
def test_sigterm_ends_a_child_in_its_start_up_and_stops_one_past_it():
    import multiprocessing as mp

    from process import runtime
    ctx = mp.get_context("spawn")
    for holding in (False, True):
        flag, ready, saved = (runtime.Flag(ctx) for _ in range(3))
        child = ctx.Process(target=_starting_child, args=(flag, ready, saved, holding))
        child.start()
        try:
            assert ready.wait(60)
            os.kill(child.pid, signal.SIGTERM)
            child.join(10)
            assert child.exitcode == 0 and flag.is_set()  # the master sees a clean stop
            assert saved.is_set() == holding
        finally:
            if child.exitcode is None:
                child.kill()


@pytest.mark.slow
def test_sigint_writes_final_checkpoints_and_exits_zero(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(ROOT / "master.py"), str(TINY_DDPG), "0",
                             "--output-root", str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "InvertedPendulum-v5" / "tiny_ddpg"
    deadline = time.time() + 120
    while not (run / "checkpoints/policy/latest.json").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.5)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    log = (run / "log/valuerl.log").read_text().strip().splitlines()
    assert log[-1].endswith("final checkpoint")
    final_updates = int(log[-1].split("updates=")[1].split()[0])
    assert counters(run)["updates"] == final_updates


# ---------------------------------------------------------------- bad inputs


@pytest.mark.slow
def test_resume_with_nothing_to_resume(tmp_path):
    out = run_master(TINY_DDPG, 0, "--resume", "--output-root", tmp_path)
    assert out.returncode == 2
    assert "no run to resume" in out.stderr and out.stderr.count("\n") == 1
    assert snapshot(tmp_path) == {}


@pytest.mark.slow
def test_resume_without_checkpoint_and_occupied_folder(tmp_path):
    run = tmp_path / "InvertedPendulum-v5" / "tiny_ddpg"
    (run / "log").mkdir(parents=True)
    (run / "log/notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    out = run_master(TINY_DDPG, 0, "--resume", "--output-root", tmp_path)
    assert out.returncode == 2 and "no checkpoint yet" in out.stderr
    out = run_master(TINY_DDPG, 0, "--output-root", tmp_path)
    assert out.returncode == 2 and "already holds a run" in out.stderr
    assert "--resume" in out.stderr and "--overwrite" in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.slow
@pytest.mark.parametrize("gpu,visible,message", [
    (3, "", "shows no GPU; use 0"),
    (-1, "", "is not a GPU id"),
    (2, "4,6", "GPU 2 does not exist: CUDA_VISIBLE_DEVICES=4,6 gives 2 GPU(s)"),
])
def test_bad_gpu(tmp_path, gpu, visible, message):
    out = run_master(TINY_DDPG, gpu, "--output-root", tmp_path,
                     env={"CUDA_VISIBLE_DEVICES": visible})
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert snapshot(tmp_path) == {}


@pytest.mark.slow
def test_bad_environment(tmp_path):
    cfg = tmp_path / "bad_env.json"
    cfg.write_text(json.dumps({"inherits": [str(TINY_DDPG)],
                               "updates": {"env": {"name": "Hopper-v1"}}}))
    out = run_master(cfg, 0, "--output-root", tmp_path / "out")
    assert out.returncode == 2 and "Hopper-v1" in out.stderr and "Traceback" not in out.stderr
    cfg.write_text(json.dumps({"inherits": [str(TINY_DDPG)],
                               "updates": {"env": {"obs_dims": 5}}}))
    out = run_master(cfg, 0, "--output-root", tmp_path / "out")
    assert out.returncode == 2 and "obs_dims = 5" in out.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_replay_too_big_for_disk(tmp_path):
    cfg = tmp_path / "huge.json"
    cfg.write_text(json.dumps({"inherits": [str(TINY_DDPG)],
                               "updates": {"policy_config": {"replay_size": 10**14}}}))
    out = run_master(cfg, 0, "--output-root", tmp_path / "out")
    assert out.returncode == 2 and "replay buffer needs" in out.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- devices


def test_assign_devices(monkeypatch):
    assert devices.assign_devices(0, True, []) [:2] == ("", "")
    assert devices.assign_devices(1, True, ["0", "1", "2", "3"])[:2] == ("1", "2")
    assert devices.assign_devices(2, False, ["0", "1", "2", "3"])[:2] == ("2", "")
    policy, model, note = devices.assign_devices(0, True, ["7"])
    assert (policy, model) == ("7", "7") and "shares" in note
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert devices.visible_gpus() == ["3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert devices.visible_gpus() == []


@pytest.mark.slow
def test_children_see_their_devices(tmp_path):
    """With CUDA_VISIBLE_DEVICES=3,5 preset, GPU 0 means 3 for the policy and 5 for the model."""
    cfg = tmp_path / "counting_model.json"
    cfg.write_text(json.dumps({
        "inherits": [str(ROOT / "config/algos/mve_tdk.json")],
        "updates": {
            "env": {"name": "pipeline_stubs:Counting-v0", "obs_dims": 2, "action_dims": 1,
                    "reward_scale": 1.0, "discount": 0.99, "max_frames": 10},
            "agent_config": {"batch_size": 2, "full_random_n": 0},
            "evaluator_config": {"count": 1},
            "policy_config": {"batch_size": 8, "replay_size": 500, "frames_before_learning": 20,
                              "log_every_n": 10, "epoch_every_n": 10, "frames_per_update": 1},
            "model_config": {"batch_size": 8, "replay_size": 500, "frames_before_learning": 20,
                             "log_every_n": 10, "epoch_every_n": 10, "frames_per_update": 1,
                             "pretrain_n": False},
        }}))
    impl = {"policy": "pipeline_stubs:StubLearner", "worldmodel": "pipeline_stubs:StubModelLearner"}
    os.environ["CUDA_VISIBLE_DEVICES"] = "3,5"
    try:
        assert master.main([str(cfg), "0", "--output-root", str(tmp_path / "out"),
                            "--total-frames", "60"], impl=impl) == 0
    finally:
        del os.environ["CUDA_VISIBLE_DEVICES"]
    log = tmp_path / "out/pipeline_stubs_Counting-v0/counting_model/log"
    seen = {p.stem: p.read_text().splitlines()[0].split("CUDA_VISIBLE_DEVICES=")[1]
            for p in log.glob("*.out")}
    assert seen == {"policy-learner": "'3'", "worldmodel-learner": "'5'",
                    "interactor-0": "''", "evaluator-0": "''"}


def test_learner_threads_follow_the_cores_given(monkeypatch):
    plan = preflight.Plan(config={"agent_config": {"count": 1}, "evaluator_config": {"count": 2}},
                          run=None, seed=0, experiment="c", devices=("", ""), device_note="",
                          model_based=True)
    specs = master.make_specs(plan, master.parse_args(["c.json", "0", "--cpus", "8"]))
    assert [(s.role, s.threads) for s in specs] == [
        ("policy", 4), ("worldmodel", 4), ("interactor", 1), ("evaluator", 1), ("evaluator", 1)]
    # Without --cpus: the cores this process may run on, not the machine's count.
    monkeypatch.setattr(master.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    monkeypatch.setattr(master.os, "cpu_count", lambda: 64)
    specs = master.make_specs(dataclasses.replace(plan, model_based=False),
                              master.parse_args(["c.json", "0"]))
    assert [(s.role, s.threads) for s in specs][:1] == [("policy", 3)]
    with pytest.raises(SystemExit):
        master.parse_args(["c.json", "0", "--cpus", "0"])


def _flag_child(flag, ready):
    """Polls `flag` as the children's loops do, setting it from a SIGTERM handler."""
    signal.signal(signal.SIGTERM, lambda *_: flag.set())
    ready.set()
    while not flag.is_set():
        flag.wait(0.0005)
        flag.is_set()


@pytest.mark.slow
def test_stop_flag_is_shared_and_safe_to_set_from_a_signal_handler():
    import multiprocessing as mp

    from process import runtime
    ctx = mp.get_context("spawn")
    flag, ready = runtime.Flag(ctx), [runtime.Flag(ctx) for _ in range(2)]
    assert not flag.is_set() and flag.wait(0.01) is False
    children = [ctx.Process(target=_flag_child, args=(flag, r)) for r in ready]
    for child in children:
        child.start()
    assert all(r.wait(60) for r in ready)  # both handlers are in place
    # A SIGTERM arriving in the middle of is_set/wait never deadlocks the handler's flag.set().
    os.kill(children[0].pid, signal.SIGTERM)
    children[0].join(10)
    assert children[0].exitcode == 0
    assert flag.is_set()  # set by the first child's handler, seen by the second
    children[1].join(10)
    assert children[1].exitcode == 0
    assert flag.wait(0) is True
