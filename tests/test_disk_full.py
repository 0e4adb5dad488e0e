"""A full disk: the replay buffer takes its blocks at creation; a checkpoint, log or TensorBoard
write that finds the disk full stops the run with one sentence naming the disk and the fix,
loses nothing already published, and --resume after freeing space finishes the run.

The slow tests run master.py over the counting pipeline (pipeline_stubs): one with a learner
whose saves raise ENOSPC (always runs), one on a real tmpfs filled up under a live run (needs
permission to mount; skipped with the reason otherwise).
"""

import errno
import json
import math
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import master
import util
from master_runs import FBL, IMPL, RATIO, counters, counting_config
from pipeline_stubs import FULL_DISK_AT
from process import runtime
from process.rundir import RunDir, append_greedy_row
from replay import ReplayBuffer, ReplayError

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
RUN = Path("pipeline_stubs_Counting-v0") / "counting"  # the counting config's run, unseeded


def _enospc(path="/data/run/x"):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


# ---------------------------------------------------------------- recognising a full disk


def test_disk_full_recognises_every_library_s_way_of_saying_it():
    import tensorflow as tf

    assert util.disk_full(_enospc("/d/ckpt")) == "/d/ckpt"
    assert util.disk_full(OSError(errno.EDQUOT, "Disk quota exceeded")) == ""
    # TensorFlow's error for a checkpoint or a summary (the message as TF 2.21 writes it).
    tf_error = tf.errors.ResourceExhaustedError(None, None, (
        "{{function_node __wrapped__SaveV2_dtypes_2_device_/job:localhost/replica:0/task:0/"
        "device:CPU:0}} /d/ckpt/.tmp-ckpt-3-77/variables_temp/part-00000-of-00001.data-00000-"
        "of-00001.tempstate13; No space left on device [Op:SaveV2]"))
    assert util.disk_full(tf_error) == ("/d/ckpt/.tmp-ckpt-3-77/variables_temp/part-00000-of-"
                                        "00001.data-00000-of-00001.tempstate13")
    # shutil.copytree (a backup) gathers its errors into one.
    assert util.disk_full(shutil.Error([("a", "b", "[Errno 28] No space left on device")])) == ""
    try:  # raised while handling it
        try:
            raise _enospc("/d/log")
        except OSError:
            raise RuntimeError("could not log") from None
    except RuntimeError as e:
        assert util.disk_full(e) is None  # `from None` hides it, as it should
    try:
        try:
            raise _enospc("/d/log")
        except OSError as inner:
            raise RuntimeError("could not log") from inner
    except RuntimeError as e:
        assert util.disk_full(e) == "/d/log"
    assert util.disk_full(OSError(errno.EACCES, "Permission denied")) is None
    assert util.disk_full(ValueError("no")) is None


def test_a_line_cut_short_by_a_full_disk_is_undone(tmp_path, monkeypatch):
    log = tmp_path / "valuerl.log"
    util.append_line(log, "first line")
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 4:
            return real_write(fd, data[:4])  # the disk had room for 4 bytes
        raise _enospc(str(log))

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError) as raised:
        util.append_line(log, "second line")
    assert raised.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        append_greedy_row(tmp_path / "run.greedy.csv", 0.5, 1, 2000, 10.0)
    monkeypatch.undo()
    util.append_line(log, "third line")
    assert log.read_text() == "first line\nthird line\n"
    append_greedy_row(tmp_path / "run.greedy.csv", 0.5, 1, 2000, 10.0)
    assert (tmp_path / "run.greedy.csv").read_text() == "0.500000,1,2000,10.000000\n"


# ---------------------------------------------------------------- the replay buffer's blocks


def test_the_frames_file_is_allocated_at_creation(tmp_path):
    buf = ReplayBuffer.create(tmp_path / "replay", 11, 3, 50_000)
    st = (tmp_path / "replay/frames.f32").stat()
    assert st.st_size == buf.slots * (2 * 11 + 3 + 2) * 4
    assert st.st_blocks * 512 >= st.st_size  # nothing left to allocate by a later write
    buf.close()


def test_without_fallocate_zeros_are_written(tmp_path, monkeypatch):
    import replay

    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    monkeypatch.setattr(replay, "_ZEROS_CHUNK", 1 << 16)  # several chunks
    buf = ReplayBuffer.create(tmp_path / "replay", 11, 3, 20_000)
    st = (tmp_path / "replay/frames.f32").stat()
    assert st.st_size == buf.slots * (2 * 11 + 3 + 2) * 4 and st.st_blocks * 512 >= st.st_size
    assert buf.count == 0
    buf.close()


def test_no_room_for_the_blocks_is_one_sentence_and_leaves_nothing(tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise _enospc()

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(ReplayError, match=r"^the disk under .* has no room left for the replay "
                                          r"buffer's 0\.\d\d GB; lower replay_size or choose "
                                          r"another --output-root\.$"):
        ReplayBuffer.create(tmp_path / "run" / "replay", 11, 3, 20_000)
    assert list((tmp_path / "run").iterdir()) == []  # no temporary folder left


# ---------------------------------------------------------------- the master's sentence


def test_the_master_names_the_disk_and_the_fix(tmp_path, capsys, monkeypatch):
    run = RunDir(root=str(tmp_path / "Env" / "exp"), name="exp")
    run.make_dirs()
    mount = util.mount_point(tmp_path)
    # A child's full disk: its .err ends with what it could not write.
    run.error_file("policy-learner").write_text(
        f"Traceback ...\nOSError: [Errno 28] No space left on device\n"
        f"{runtime.DISK_FULL_LINE}{run.checkpoint_dir('policy')}\n")
    sup = master.Supervisor.__new__(master.Supervisor)
    sup.run, sup.full_path, sup.stalled = run, "", None
    sup.failure = ("policy-learner", runtime.DISK_FULL_EXIT)
    sup.status = types.SimpleNamespace(line=lambda: "frames 1")
    assert sup.report() == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: the disk holding {run.path} is full (policy-learner could "
                          f"not write {run.checkpoint_dir('policy')}; ")
    assert err.endswith(f"GB free on {mount}); free space on {mount} or move the run; then "
                        f"--resume.")
    assert len(err.splitlines()) == 1

    # The master's own state file: the same failure, and the run is stopped.
    sup = master.Supervisor.__new__(master.Supervisor)
    sup.run, sup.failure, sup.full_path, sup.stalled = run, None, "", None
    sup.stop = runtime.Flag()
    sup.specs = [types.SimpleNamespace(hours=lambda: 1.0)]

    def full(path, obj):
        raise _enospc(str(path))

    monkeypatch.setattr(util, "atomic_write_json", full)
    sup.record_hours()
    assert sup.stop.is_set() and sup.failure == ("master.py", runtime.DISK_FULL_EXIT)
    sup.status = types.SimpleNamespace(line=lambda: "frames 1")
    assert sup.report() == 2
    assert f"(master.py could not write {run.hours_file}; " in capsys.readouterr().err


# ---------------------------------------------------------------- whole runs


def owed_updates(frames: int) -> int:
    return math.ceil((frames - FBL) / RATIO)


def _greedy_rows(run: Path) -> list[str]:
    """The evaluator's rows, each whole (none yet when it had no policy before the stop)."""
    path = run / "log/counting.greedy.csv"
    if not path.exists():
        return []
    text = path.read_text()
    assert text.endswith("\n")
    rows = text.splitlines()
    assert all(len(r.split(",")) == 4 for r in rows)
    return rows


@pytest.mark.slow
def test_a_full_disk_in_a_learner_s_save_stops_the_run_and_a_resume_finishes(
        tmp_path, monkeypatch, capsys):
    cfg = counting_config(tmp_path)  # checkpoints every 20 updates
    out = tmp_path / "out"
    run = out / RUN
    impl = dict(IMPL, policy="pipeline_stubs:FullDiskLearner")
    monkeypatch.setenv(FULL_DISK_AT, "60")  # the checkpoints at 20 and 40 updates get written
    argv = [str(cfg), "0", "--output-root", str(out), "--total-frames", "300"]
    assert master.main(argv, impl=impl) == 2
    err = capsys.readouterr().err
    mount = util.mount_point(run)
    assert (f"error: the disk holding {run} is full (policy-learner could not write "
            f"{run / 'checkpoints/policy'}; ") in err
    assert f"free space on {mount} or move the run; then --resume." in err
    # Nothing published is lost: the last checkpoint, the frames, whole greedy rows.
    assert counters(run)["updates"] == 40
    with ReplayBuffer.open(run / "replay") as replay:
        frames = replay.count
    assert frames >= FBL + 40 * RATIO
    rows = _greedy_rows(run)

    monkeypatch.delenv(FULL_DISK_AT)  # space was freed
    assert master.main(argv + ["--resume"], impl=impl) == 0
    finished = json.loads((run / "state/finished.json").read_text())
    assert finished["frames"] >= 300 and finished["policy_updates"] == owed_updates(
        finished["frames"])
    assert (run / "log/valuerl.log").read_text().count("resumed from") == 1
    assert _greedy_rows(run)[: len(rows)] == rows


@pytest.fixture
def tiny_disk(tmp_path):
    """A 32 MB tmpfs at tmp_path/disk (needs the right to mount: root, or CAP_SYS_ADMIN)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'no permission'}); "
                    f"test_a_full_disk_in_a_learner_s_save... covers the same path")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left; returns it."""
    filler = disk / "filler"
    chunk = bytes(1 << 20)
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(chunk[:size])
            except OSError as e:
                assert e.errno == errno.ENOSPC
    return filler


@pytest.mark.slow
def test_a_real_full_disk_stops_the_run_in_one_sentence_and_a_resume_finishes(
        tmp_path, tiny_disk):
    # FullDiskLearner (FULL_DISK_AT unset: the disk is really full here) for its allowance of
    # the frames owed after a resume from a checkpoint older than the crash.
    code = ("import sys, master; sys.exit(master.main(sys.argv[1:], "
            "impl={'policy': 'pipeline_stubs:FullDiskLearner'}))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]))
    argv = [sys.executable, "-c", code, str(counting_config(tmp_path)), "0", "--output-root",
            str(tiny_disk), "--total-frames", "600"]
    run = tiny_disk / RUN
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not ((run / "checkpoints/policy/latest.json").exists()
                   and counters(run)["updates"] >= 40):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.2)
        filler = _fill(tiny_disk)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: the disk holding {run} is full (")
    assert lines[0].endswith(f"free space on {tiny_disk} or move the run; then --resume.")
    published = counters(run)
    assert published["updates"] >= 40
    rows = _greedy_rows(run)

    filler.unlink()
    done = subprocess.run(argv + ["--resume"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    finished = json.loads((run / "state/finished.json").read_text())
    assert finished["frames"] >= 600
    assert finished["policy_updates"] == owed_updates(finished["frames"])
    assert counters(run)["updates"] > published["updates"]
    assert _greedy_rows(run)[: len(rows)] == rows
    with ReplayBuffer.open(run / "replay") as replay:
        batch = replay.sample(4000, 10**6, np.random.default_rng(0))
    assert np.all(batch.next_obs[:, 0] == batch.obs[:, 0] + 1)  # every row whole
