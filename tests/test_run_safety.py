"""Run safety: one owner per run folder, resume checked before anything starts, inputs checked
up front, the status line's phases.

The slow tests run real masters of the tiny configs (tests/configs/) as subprocesses; the lock
tests and the phase tests run in this process.
"""

import hashlib
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import master
from master_runs import IMPL, counting_config, run_master
from process import preflight
from process.rundir import (
    PHASE_STARTING,
    PHASE_UPDATING,
    PHASE_WAITING_FOR_MODEL,
    Progress,
    RunDir,
    RunLock,
    RunLocked,
)
from util import process_alive, process_cmdline, process_descendants

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

TINY_DDPG = TESTS / "configs/tiny_ddpg.json"


def digest(folder: Path) -> dict:
    """Every file and folder under `folder`: a sha256 of each file's bytes, "dir" for folders."""
    if not folder.exists():
        return {}
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def greedy_hours(run: Path) -> list[float]:
    return [float(line.split(",")[0])
            for line in (run / f"log/{run.name}.greedy.csv").read_text().splitlines()]


def wait_for(predicate, timeout: float, proc=None) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        assert proc is None or proc.poll() is None, "the master exited early"
        time.sleep(0.3)


# ---------------------------------------------------------------- the lock, in-process


def _hold_inherited(lock, started, release):
    started.set()
    release.wait(60)


@pytest.mark.slow
def test_lock_is_exclusive_names_its_holder_and_is_shared_with_children(tmp_path):
    run = RunDir(root=str(tmp_path / "out/Env/exp"), name="exp")
    first = RunLock(run)
    first.acquire()
    first.record_holder("master.py exp.json 0")
    assert run.lock_file.exists() and not run.has_content()  # the lock alone is not a run
    with pytest.raises(RunLocked) as refused:
        RunLock(run).acquire()
    message = str(refused.value)
    assert f"pid {os.getpid()}" in message and "master.py exp.json 0" in message
    assert str(run.path) in message

    # A spawned child given the lock holds it after its parent let go.
    ctx = mp.get_context("spawn")
    started, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_inherited, args=(first.inherit(), started, release))
    child.start()
    try:
        assert started.wait(60)
        first.release()
        with pytest.raises(RunLocked):
            RunLock(run).acquire()
        # A holder that died while its child lives on: the refusal names the child.
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()
        info = json.loads(run.lock_file.read_text())
        run.lock_file.write_text(json.dumps(dict(info, pid=int(dead))) + "\n")
        with pytest.raises(RunLocked) as refused:
            RunLock(run).acquire()
        assert f"(pid {dead} on" in str(refused.value)
        assert f"which died; its child processes (pids {child.pid})" in str(refused.value)
    finally:
        release.set()
        child.join(30)
    second = RunLock(run)
    second.acquire()  # the last holder exited: the kernel dropped the lock
    second.release()


def test_lock_of_a_refused_start_leaves_nothing_and_overwrite_keeps_the_lock(tmp_path):
    run = RunDir(root=str(tmp_path / "out/Env/exp"), name="exp")
    lock = RunLock(run)
    lock.acquire()
    lock.release(discard=True)
    assert not (tmp_path / "out").exists()

    lock = RunLock(run)
    lock.acquire()
    inode = run.lock_file.stat().st_ino
    (run.path / "log").mkdir()
    (run.path / "log/valuerl.log").write_text("x")
    (run.state / "progress.bin").write_bytes(b"0" * 8)
    assert run.has_content()
    run.clear()
    assert [p.name for p in run.path.rglob("*")] == ["state", "owner.lock"]
    assert run.lock_file.stat().st_ino == inode  # the same file: a waiting master locks it too
    with pytest.raises(RunLocked):
        RunLock(run).acquire()
    lock.release()


@pytest.mark.slow
def test_sweep_guard_waits_for_the_same_lock(tmp_path):
    import sweep
    from cluster import guard as sweep_guard
    run = RunDir(root=str(tmp_path / "InvertedPendulum-v5/tiny_ddpg.seed0"),
                 name="tiny_ddpg.seed0")
    holder = RunLock(run)
    holder.acquire()
    holder.record_holder("master.py by hand")
    job = {"key": "k", "attempt": 1, "config": str(TINY_DDPG), "seed": 0, "total_frames": 200,
           "output_root": str(tmp_path), "run": {"root": run.root, "name": run.name},
           "gpus": 0, "cpus": 1, "lock_wait": 1.0, "parent": 0}
    out = subprocess.run([sys.executable, "-c", "import sys; from cluster import guard; "
                          "sys.exit(guard.main(sys.argv[1]))", json.dumps(job)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    holder.release()
    assert out.returncode == sweep_guard.GUARD_LOCK_TIMEOUT, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert "master.py by hand" in report["message"] and f"pid {os.getpid()}" in report["message"]
    assert not run.has_content()  # nothing was started
    assert sweep.run_state(run, 200) == sweep.NEW  # a lone lock file is not a run


# ---------------------------------------------------------------- a live run


@pytest.mark.slow
def test_live_run_refuses_second_masters_and_hours_keep_growing(tmp_path):
    run = tmp_path / "InvertedPendulum-v5" / "tiny_ddpg"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(ROOT / "master.py"), str(TINY_DDPG), "0",
                             "--output-root", str(tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run / "checkpoints/policy/latest.json").exists()
                 and (run / f"log/{run.name}.greedy.csv").exists(), 120, proc)
        family = {proc.pid} | process_descendants(proc.pid)
        workers = [p for p in family if p != proc.pid and "spawn_main" in process_cmdline(p)]
        assert len(workers) == 3
        for pid in workers:  # every child holds the run's lock through its own descriptor
            targets = {os.path.realpath(f"/proc/{pid}/fd/{fd}")
                       for fd in os.listdir(f"/proc/{pid}/fd")}
            assert str(run / "state/owner.lock") in targets
        # Freeze the live run so that only the intruders could change a file.
        for pid in family:
            os.kill(pid, signal.SIGSTOP)
        before = digest(run)
        try:
            for extra in ([], ["--resume"], ["--overwrite"]):
                out = run_master(TINY_DDPG, 0, "--output-root", tmp_path, *extra, timeout=120)
                assert out.returncode == 2, (extra, out.stdout, out.stderr)
                assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
                assert "is in use by master.py" in out.stderr and f"pid {proc.pid}" in out.stderr
            assert digest(run) == before
        finally:
            for pid in family:
                os.kill(pid, signal.SIGCONT)
        # Kill the master: its children stop and write final checkpoints, then the lock is free.
        proc.kill()
        proc.wait()
        wait_for(lambda: not [p for p in family if process_alive(p)], 60)
    finally:
        if proc.poll() is None:
            proc.kill()

    # Two resumes (one with a setting changed that no variable depends on): hours never go back.
    benign = tmp_path / "benign" / "tiny_ddpg.json"
    benign.parent.mkdir()
    benign.write_text(json.dumps({"inherits": [str(TINY_DDPG)],
                                  "updates": {"policy_config": {"log_every_n": 50}}}))
    hours = greedy_hours(run)
    frames = json.loads((run / "checkpoints/policy/latest.json").read_text())["counters"]
    for config, budget in ((TINY_DDPG, frames["frames"] + 200),
                           (benign, frames["frames"] + 400)):
        out = run_master(config, 0, "--output-root", tmp_path, "--resume",
                         "--total-frames", budget)
        assert out.returncode == 0, out.stderr[-3000:]
        now = greedy_hours(run)
        assert len(now) > len(hours) and now[: len(hours)] == hours
        assert now == sorted(now), now  # non-decreasing across resumes
        hours = now
    assert "policy_config.log_every_n 25 -> 50" in out.stdout
    assert "no variable changes shape" in out.stdout

    # A config that changes variable shapes is refused before any process starts.
    changed = tmp_path / "changed" / "tiny_ddpg.json"
    changed.parent.mkdir()
    changed.write_text(json.dumps({"inherits": [str(TINY_DDPG)],
                                   "updates": {"policy_config": {"hidden_layers": 2}}}))
    before = digest(run)
    started = time.time()
    out = run_master(changed, 0, "--output-root", tmp_path, "--resume", "--total-frames",
                     budget + 1000)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "policy_config.hidden_layers 1 -> 2" in out.stderr
    assert "valuerl/policy/w/0 (4, 1) vs (4, 16)" in out.stderr
    assert time.time() - started < 60
    assert digest(run) == before  # no checkpoint rotated, no child wrote its .out


# ---------------------------------------------------------------- a finished run


@pytest.mark.slow
def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    cfg = counting_config(tmp_path)
    out_root = tmp_path / "out"
    assert master.main([str(cfg), "0", "--output-root", str(out_root), "--total-frames", "200",
                        "--seed", "1"], impl=IMPL) == 0
    run = out_root / "pipeline_stubs_Counting-v0" / "counting.seed1"
    frames = json.loads((run / "state/finished.json").read_text())["frames"]
    before = digest(run)
    stamps = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    for budget in (200, 150):
        started = time.time()
        out = run_master(cfg, 0, "--output-root", out_root, "--seed", 1, "--resume",
                         "--total-frames", budget)
        assert time.time() - started < 15
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("\n") == 1 and not out.stderr
        assert f"already reached its budget: it has {frames} frames" in out.stdout
        assert f"more than {frames}" in out.stdout
    assert digest(run) == before
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == stamps


# ---------------------------------------------------------------- bad inputs


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--seed", "-1"], "--seed -1 is not a seed; give a whole number from 0 to 4294967295."),
    (["--seed", str(2**32)], f"--seed {2**32} is not a seed"),
    (["--total-frames", "100"], "--total-frames 100 ends the run before learning starts "
                                "(frames_before_learning is 100)"),
])
def test_bad_numbers_are_one_sentence_and_create_nothing(tmp_path, args, message):
    out = run_master(TINY_DDPG, 0, "--output-root", tmp_path / "out", *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_output_root_that_is_a_file(tmp_path):
    root = tmp_path / "a_file"
    root.write_text("not a folder")
    out = run_master(TINY_DDPG, 0, "--output-root", root)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert f"--output-root {root} is a file, not a folder" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    assert root.read_text() == "not a folder"


def test_output_root_that_is_not_writable(tmp_path, monkeypatch, capsys):
    # Tests run as root here, which ignores permission bits: stand in for a read-only mount.
    real = os.access
    monkeypatch.setattr(master.os, "access", lambda p, mode: False if str(p).startswith(
        str(tmp_path)) else real(p, mode))
    assert master.main([str(TINY_DDPG), "0", "--output-root", str(tmp_path / "ro/out")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} is not writable (a read-only file system or no permission)" in err
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the status line


def _status(tmp_path, model_based=True, **progress):
    import replay

    config = json.loads(json.dumps(master.config_lib.load_config(
        TESTS / ("configs/tiny_steve.json" if model_based else "configs/tiny_ddpg.json"))))
    run = RunDir(root=str(tmp_path / "run"), name="run")
    run.make_dirs()
    buf = replay.ReplayBuffer.create(run.replay, 4, 1, 1000)
    p = Progress(run.progress_file, create=True)
    return master.Status(run, config, model_based), p, buf


def _append(buf, n):
    import numpy as np

    z = np.zeros((n, 4), np.float32)
    buf.append(z, z, np.zeros((n, 1), np.float32), np.zeros(n, np.float32),
               np.zeros(n, np.float32))


def test_status_line_names_the_phase(tmp_path):
    status, progress, buf = _status(tmp_path)
    _append(buf, 60)
    assert status.line().endswith("| warm-up (random actions) 60/100")
    _append(buf, 60)
    assert status.line().endswith("| starting the learners")
    progress.set("worldmodel_phase", PHASE_UPDATING)
    assert status.line().endswith("| compiling the world model")
    progress.set("worldmodel_updates", 8)
    assert status.line().endswith("| pretraining world model 8/20")
    progress.set("worldmodel_updates", 20)
    progress.set("policy_phase", PHASE_WAITING_FOR_MODEL)
    assert status.line().endswith("| waiting for the world model")
    progress.set("policy_phase", PHASE_UPDATING)
    assert status.line().endswith("| compiling")
    progress.set("policy_updates", 5)
    assert status.line().endswith(":00")  # training: no phase, the line ends with the clock
    progress.set("policy_phase", PHASE_STARTING)
    assert status.line().endswith("| starting the learners")
    buf.close()


def test_hours_so_far_counts_time_after_the_last_checkpoint(tmp_path):
    run = RunDir(root=str(tmp_path / "run"), name="run")
    run.make_dirs()
    assert preflight.hours_so_far(run) == 0.0
    (run.checkpoint_dir("policy") / "ckpt-3").mkdir(parents=True)
    (run.checkpoint_dir("policy") / "latest.json").write_text(json.dumps(
        {"checkpoint": "ckpt-3", "counters": {"hours": 0.10, "updates": 3, "epoch": 1}}))
    assert preflight.hours_so_far(run) == pytest.approx(0.10)
    run.greedy_csv.write_text("0.050000,1,100,3.0\n0.250000,1,150,4.0\n0.2")  # a torn tail
    assert preflight.hours_so_far(run) == pytest.approx(0.25)
    (run.hours_file).write_text(json.dumps({"hours": 0.30}))
    assert preflight.hours_so_far(run) == pytest.approx(0.30)
