"""Tests of replay.py: values, windows, persistence, atomic appends under concurrent writers that
get SIGKILLed, lock-free readers, and the user-facing errors. Writes only under tmp_path."""

import collections
import multiprocessing as mp
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import portalocker
import pytest

import replay
from replay import ReplayBuffer, ReplayError, required_bytes

OBS, ACT, N = 4, 2, 8  # obs dims, action dims, frames per append
SPAWN = mp.get_context("spawn")


# --- frames that describe themselves: every field is derived from one frame id ---------------


def make_frames(ids):
    """Frames whose fields all follow from their id, so a torn row is detectable."""
    ids = np.asarray(ids, np.float64)
    obs = ids[:, None] + np.arange(OBS) * 0.25  # [n, OBS]
    next_obs = obs + 1.0
    action = np.stack([-ids, ids * 0.5], axis=1)  # [n, ACT]
    reward = ids % 7
    terminal = ids % 2
    return obs, next_obs, action, reward, terminal


def bad_rows(obs, next_obs, action, reward, terminal):
    """Indices of rows whose fields disagree with the id in obs[:, 0]."""
    expect = make_frames(obs[:, 0])
    ok = np.ones(len(obs), bool)
    for got, want in zip((obs, next_obs, action, reward, terminal), expect, strict=True):
        ok &= (got == want.astype(np.float32)).reshape(len(obs), -1).all(axis=1)
    return np.flatnonzero(~ok)


def frame_id(writer, seq, j):
    return writer * 100_000 + seq * N + j


def read_visible(path):
    """All visible frames straight from the files, by the layout in replay's docstring."""
    with ReplayBuffer.open(path) as buf:
        count, slots = buf.count, buf.slots
    assert count <= slots
    rows = np.fromfile(Path(path) / "frames.f32", "<f4").reshape(slots, 2 * OBS + ACT + 2)
    rows = rows[:count]
    return count, (rows[:, :OBS], rows[:, OBS : 2 * OBS], rows[:, 2 * OBS : 2 * OBS + ACT],
                   rows[:, -2], rows[:, -1])


# --- process bodies (module level so that spawn can import them) ------------------------------


def writer_main(path, writer, batches, log_path, pause, sync, go):
    buf = ReplayBuffer.open(path, sync=sync)
    go.wait(60)  # start together with the reader
    with open(log_path, "w", buffering=1) as log:
        for seq in range(batches):
            log.write(f"S {seq}\n")  # started: may or may not be visible if killed now
            buf.append(*make_frames([frame_id(writer, seq, j) for j in range(N)]))
            log.write(f"D {seq}\n")  # done: must be visible
            if pause:
                time.sleep(pause)
    buf.close()


def reader_main(path, newest, go, stop, out):
    buf = ReplayBuffer.open(path)
    go.set()
    rng = np.random.default_rng(7)
    samples = bad = regressions = 0
    last = 0
    while not stop.is_set():
        count = buf.count
        regressions += count < last
        last = count
        if count == 0:
            continue
        batch = buf.sample(64, newest, rng)
        bad += len(bad_rows(*batch))
        samples += 1
    out.put({"samples": samples, "bad": bad, "regressions": regressions,
             "retries": buf.optimistic_retries, "locked": buf.locked_samples})
    buf.close()


def die_before_publish(path):
    buf = ReplayBuffer.open(path)
    buf._publish = lambda new_count: os.kill(os.getpid(), signal.SIGKILL)
    buf.append(*[np.full_like(a, -1.0) for a in make_frames(np.arange(N))])


def read_log(log_path):
    started, done = [], []
    for line in Path(log_path).read_text().splitlines():
        kind, seq = line.split()
        (started if kind == "S" else done).append(int(seq))
    return started, done


def wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


# --- single-process behaviour ----------------------------------------------------------------


def test_round_trip_values(tmp_path):
    buf = ReplayBuffer.create(tmp_path / "replay", OBS, ACT, capacity=100)
    ids = [3, 10, 11, 42]
    assert buf.append(*make_frames(ids)) == 4
    batch = buf.sample(400, newest=100, rng=np.random.default_rng(0))
    assert [a.shape for a in batch] == [(400, OBS), (400, OBS), (400, ACT), (400,), (400,)]
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in batch)
    assert sorted(set(batch.obs[:, 0].tolist())) == ids
    assert len(bad_rows(*batch)) == 0
    row = np.flatnonzero(batch.obs[:, 0] == 11)[0]
    np.testing.assert_array_equal(batch.obs[row], [11.0, 11.25, 11.5, 11.75])
    np.testing.assert_array_equal(batch.next_obs[row], [12.0, 12.25, 12.5, 12.75])
    np.testing.assert_array_equal(batch.action[row], [-11.0, 5.5])
    assert batch.reward[row] == 4.0 and batch.terminal[row] == 1.0
    buf.close()


def test_samples_only_the_newest_window_across_wraps(tmp_path):
    # slots = 50 + 8: appends of 8 wrap the ring in the middle of a batch.
    buf = ReplayBuffer.create(tmp_path / "replay", OBS, ACT, 50, max_append=8, margin=8)
    rng = np.random.default_rng(1)
    buf.append(*make_frames(range(5)))
    assert set(buf.sample(300, 30, rng).obs[:, 0].tolist()) == set(range(5))
    for start in range(5, 205, N):
        buf.append(*make_frames(range(start, start + N)))
    assert buf.count == 205 and (buf.capacity, buf.slots) == (50, 58)
    batch = buf.sample(2000, 30, rng)
    assert set(batch.obs[:, 0].tolist()) == set(range(175, 205))
    assert len(bad_rows(*batch)) == 0
    # A window larger than the capacity is the whole capacity.
    assert set(buf.sample(3000, 10**6, rng).obs[:, 0].tolist()) == set(range(155, 205))
    # Uniform: each of the 30 frames about 2000/30 = 67 times.
    counts = np.bincount(batch.obs[:, 0].astype(int) - 175, minlength=30)
    assert counts.min() > 35 and counts.max() < 105
    buf.close()


def test_sampling_as_the_buffer_was_at_an_earlier_frame(tmp_path):
    buf = ReplayBuffer.create(tmp_path / "replay", OBS, ACT, 50, max_append=8, margin=8)
    rng = np.random.default_rng(2)
    for start in range(0, 48, N):
        buf.append(*make_frames(range(start, start + N)))
    # end=40: frames 0..39 only; with a window of 10: 30..39.
    assert set(buf.sample(2000, 10**6, rng, end=40).obs[:, 0].tolist()) == set(range(40))
    assert set(buf.sample(1000, 10, rng, end=40).obs[:, 0].tolist()) == set(range(30, 40))
    # An end beyond the count is the count.
    assert set(buf.sample(2000, 10**6, rng, end=500).obs[:, 0].tolist()) == set(range(48))
    # After 80 frames in 58 slots (and room for one append of 8), frames before 30 may be
    # overwritten: asking for them is a clear error; frames 30..39 still come back.
    for start in range(48, 80, N):
        buf.append(*make_frames(range(start, start + N)))
    with pytest.raises(ReplayError, match="no longer holds the 40 frames before frame 40"):
        buf.sample(10, 10**6, rng, end=40)
    assert set(buf.sample(1000, 10, rng, end=40).obs[:, 0].tolist()) == set(range(30, 40))
    with pytest.raises(ValueError, match="end must be positive"):
        buf.sample(10, 10, rng, end=0)
    buf.close()


def test_count_and_frames_persist_after_reopen(tmp_path):
    path = tmp_path / "replay"
    with ReplayBuffer.create(path, OBS, ACT, 64) as buf:
        buf.append(*make_frames(range(8)))
        buf.append(*make_frames(range(8, 11)))
    assert ReplayBuffer.exists(path)
    with ReplayBuffer.open(path, obs_dims=OBS, action_dims=ACT, capacity=64) as buf:
        assert buf.count == 11
        assert set(buf.sample(500, 64, np.random.default_rng(2)).obs[:, 0].tolist()) == set(
            range(11))
        assert buf.append(*make_frames([11])) == 12
    count, fields = read_visible(path)
    assert count == 12
    np.testing.assert_array_equal(fields[0][:, 0], np.arange(12))
    assert len(bad_rows(*fields)) == 0


def test_two_handles_in_one_process_see_each_other(tmp_path):
    a = ReplayBuffer.create(tmp_path / "replay", OBS, ACT, 64)
    b = ReplayBuffer.open(tmp_path / "replay")
    a.append(*make_frames(range(3)))
    assert b.count == 3
    b.append(*make_frames(range(3, 5)))
    assert a.count == 5
    a.close()
    b.close()


# --- errors a user can cause -----------------------------------------------------------------


def test_disk_full_refusal_creates_nothing(tmp_path, monkeypatch):
    need = required_bytes(348, 17, 1_000_000)
    assert need == 4096 + (1_000_000 + replay.DEFAULT_MARGIN) * (2 * 348 + 17 + 2) * 4
    free = need - 1
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**13, 10**13 - free, free))
    with pytest.raises(ReplayError, match=r"has 2\.91 GB free but the replay buffer needs "
                       r"2\.91 GB; lower replay_size or choose another --output-root\."):
        ReplayBuffer.create(tmp_path / "run" / "replay", 348, 17, 1_000_000)
    assert list(tmp_path.iterdir()) == []


def test_missing_and_mismatched_buffers_give_clear_errors(tmp_path):
    path = tmp_path / "replay"
    assert not ReplayBuffer.exists(path)
    with pytest.raises(ReplayError, match="there is no replay buffer at .*replay"):
        ReplayBuffer.open(path)
    ReplayBuffer.create(path, OBS, ACT, 64).close()
    with pytest.raises(ReplayError, match="has capacity=64 but this run asks for capacity=65"):
        ReplayBuffer.open(path, capacity=65)
    with pytest.raises(ReplayError, match="already exists"):
        ReplayBuffer.create(path, OBS, ACT, 64)
    with ReplayBuffer.open(path) as buf:
        with pytest.raises(ReplayError, match="is empty"):
            buf.sample(4, 10, np.random.default_rng(0))
        with pytest.raises(ReplayError, match="exceeds this replay buffer's limit of 1024"):
            buf.append(*make_frames(range(1025)))
        with pytest.raises(ValueError, match="action has shape"):
            obs, nxt, act, rew, term = make_frames(range(2))
            buf.append(obs, nxt, act[:, :1], rew, term)
        assert buf.count == 0
    (path / "header.bin").write_bytes(b"x" * 4096)
    with pytest.raises(ReplayError, match="not a replay buffer header"):
        ReplayBuffer.open(path)


def test_open_refuses_when_the_rest_of_the_sparse_file_cannot_fit(tmp_path, monkeypatch):
    path = tmp_path / "replay"
    ReplayBuffer.create(path, 348, 17, 100_000).close()
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**13, 10**13 - 10**6, 10**6))
    with ReplayBuffer.open(path):  # created with every block allocated: nothing left to need
        pass
    frames = path / "frames.f32"
    size = frames.stat().st_size
    os.truncate(frames, 0)  # sparse, as earlier versions created it
    os.truncate(frames, size)
    with pytest.raises(ReplayError, match=r"has 0\.00 GB free but the replay buffer still needs "
                       r"0\.33 GB; free some space or move the run\."):
        ReplayBuffer.open(path)


def test_create_into_an_existing_empty_folder(tmp_path):
    (tmp_path / "replay").mkdir()
    ReplayBuffer.create(tmp_path / "replay", OBS, ACT, 8).close()
    assert sorted(p.name for p in (tmp_path / "replay").iterdir()) == [
        "frames.f32", "header.bin", "layout.json", "writer.lock"]
    assert [p.name for p in tmp_path.iterdir()] == ["replay"]  # no temporary folder left


# --- lock-free readers -----------------------------------------------------------------------


def test_reader_lapped_during_copy_retries_then_locks(tmp_path):
    """Writers that publish more than margin - max_append frames while a reader copies are
    caught by the check after the copy; the reader retries, and finally copies under the lock."""
    path = tmp_path / "replay"
    reader = ReplayBuffer.create(path, OBS, ACT, 16, max_append=4, margin=4)  # slots 20
    writer = ReplayBuffer.open(path)
    next_id = 0
    for _ in range(10):
        writer.append(*make_frames(range(next_id, next_id + 4)))
        next_id += 4
    real_gather = reader._gather
    laps = {"left": 0}
    copies = []

    def gather_while_writers_lap(slots):
        nonlocal next_id
        if laps["left"] > 0:  # 8 frames land during the copy: rows of the window get reused
            laps["left"] -= 1
            for _ in range(2):
                writer.append(*make_frames(range(next_id, next_id + 4)))
                next_id += 4
        rows = real_gather(slots)
        copies.append(rows[:, 0].copy())
        return rows

    reader._gather = gather_while_writers_lap
    rng = np.random.default_rng(3)

    laps["left"] = 1
    batch = reader.sample(500, 16, rng)
    assert (reader.optimistic_retries, reader.locked_samples) == (1, 0)
    # Without the check the first copy would have been returned: the window it drew was frames
    # 24..39, but frames 44..47 had overwritten the rows of 24..27.
    assert set(copies[0].tolist()) - set(range(24, 40)) == set(range(44, 48))
    assert set(batch.obs[:, 0].tolist()) <= set(range(next_id - 16, next_id))
    assert len(bad_rows(*batch)) == 0

    # Lapped on every optimistic try: then it copies under the shared lock (where no writer,
    # and so no lapping hook, can run: appending from here would wait for ourselves).
    laps["left"] = replay._OPTIMISTIC_TRIES
    batch = reader.sample(500, 16, rng)
    assert (reader.optimistic_retries, reader.locked_samples) == (1 + replay._OPTIMISTIC_TRIES, 1)
    assert set(batch.obs[:, 0].tolist()) == set(range(next_id - 16, next_id))
    assert len(bad_rows(*batch)) == 0
    writer.close()
    reader.close()


@pytest.mark.parametrize("page", [16384, 65536])
def test_synced_appends_with_large_kernel_pages(tmp_path, monkeypatch, page):
    """ARM64 kernels with 16 KB or 64 KB pages: the msyncs stay page-aligned and within each map
    (the 4096-byte header map is smaller than one such page)."""
    import mmap

    monkeypatch.setattr(mmap, "PAGESIZE", page)
    assert replay.mmap.PAGESIZE == page
    path = tmp_path / "replay"
    buf = ReplayBuffer.create(path, OBS, ACT, capacity=3000, sync=True)
    flushed = []
    real_flush = replay._flush

    def watch(view, begin, end):
        flushed.append((len(view), begin - begin % page, min(end, len(view))))
        real_flush(view, begin, end)

    monkeypatch.setattr(replay, "_flush", watch)
    next_id = 0
    for n in (1, 7, 300, 1024, 1024, 1024, 5):  # wraps the ring (3000 + 16384 slots) never,
        buf.append(*make_frames(range(next_id, next_id + n)))  # but crosses many pages
        next_id += n
    assert flushed and all(start % page == 0 and start < stop <= size
                            for size, start, stop in flushed)
    assert replay.HEADER_BYTES in {size for size, _, _ in flushed}  # the header's map too
    batch = buf.sample(2000, newest=3000, rng=np.random.default_rng(1))
    assert len(bad_rows(*batch)) == 0
    assert set(batch.obs[:, 0].tolist()) <= set(range(next_id - 3000, next_id))
    buf.close()
    count, fields = read_visible(path)  # on disk, as the files say
    assert count == next_id and len(bad_rows(*fields)) == 0


@pytest.mark.parametrize("machine, locked", [("aarch64", True), ("arm64", True),
                                             ("ppc64le", True), ("x86_64", False),
                                             ("AMD64", False), ("i686", False)])
def test_samples_lock_where_memory_order_is_weaker_than_x86(tmp_path, monkeypatch, machine,
                                                            locked):
    monkeypatch.setattr(replay.platform, "machine", lambda: machine)
    path = tmp_path / "replay"
    buf = ReplayBuffer.create(path, OBS, ACT, capacity=64)
    buf.append(*make_frames(range(40)))
    taken = []
    real_lock = portalocker.lock
    monkeypatch.setattr(portalocker, "lock", lambda f, flags: (taken.append(flags),
                                                               real_lock(f, flags))[1])
    rng = np.random.default_rng(0)
    for _ in range(5):
        batch = buf.sample(32, 64, rng)
        assert len(bad_rows(*batch)) == 0 and set(batch.obs[:, 0].tolist()) <= set(range(40))
    assert buf.lock_free is not locked
    assert buf.locked_samples == (5 if locked else 0) and buf.optimistic_retries == 0
    assert taken == ([portalocker.LockFlags.SHARED] * 5 if locked else [])
    buf.close()


@pytest.mark.slow
def test_concurrent_writers_lapping_a_small_ring_never_show_torn_rows(tmp_path):
    """3 writer processes wrap a 64-frame ring many times while a reader samples without a lock."""
    path = tmp_path / "replay"
    batches = 3000
    ReplayBuffer.create(path, OBS, ACT, 64, max_append=N, margin=2 * N).close()
    go, stop, out = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    reader = SPAWN.Process(target=reader_main, args=(str(path), 64, go, stop, out))
    reader.start()
    writers = [SPAWN.Process(target=writer_main, args=(str(path), w, batches,
                                                       str(tmp_path / f"w{w}.log"), 0, False, go))
               for w in range(3)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(60)
        assert p.exitcode == 0
    stop.set()
    result = out.get(timeout=30)
    reader.join(30)
    with ReplayBuffer.open(path) as buf:
        assert buf.count == 3 * batches * N
    assert result["samples"] > 0 and result["bad"] == 0 and result["regressions"] == 0
    print("lapping reader:", result)


# --- writers killed with SIGKILL -------------------------------------------------------------


@pytest.mark.slow
def test_writer_killed_before_publishing_exposes_nothing(tmp_path):
    path = tmp_path / "replay"
    with ReplayBuffer.create(path, OBS, ACT, 64) as buf:
        buf.append(*make_frames(range(8)))
    child = SPAWN.Process(target=die_before_publish, args=(str(path),))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    rows = np.fromfile(path / "frames.f32", "<f4").reshape(-1, 2 * OBS + ACT + 2)
    assert (rows[8:16] == -1.0).all()  # the dead writer did write its rows...
    buf = ReplayBuffer.open(path)
    assert buf.count == 8  # ...but never published them
    assert set(buf.sample(500, 64, np.random.default_rng(4)).obs[:, 0].tolist()) == set(range(8))
    with open(path / "writer.lock", "a+b") as f:  # the kernel released the dead writer's lock
        portalocker.lock(f, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING)
        portalocker.unlock(f)
    assert buf.append(*make_frames(range(8, 16))) == 16  # overwrites the unpublished rows
    buf.close()
    count, fields = read_visible(path)
    np.testing.assert_array_equal(fields[0][:, 0], np.arange(16))
    assert len(bad_rows(*fields)) == 0


@pytest.mark.slow
def test_writers_and_reader_with_one_writer_sigkilled(tmp_path):
    """Three writers append numbered frames while a reader samples; writer 0 is SIGKILLed
    mid-run. Afterwards: the count is exact, every visible row is intact, every batch is whole
    or absent, and nothing a surviving writer appended is lost."""
    path = tmp_path / "replay"
    batches, w0_batches = 600, 5000  # writer 0 is killed long before it could finish
    ReplayBuffer.create(path, OBS, ACT, (2 * batches + w0_batches) * N).close()
    go, stop, out = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    reader = SPAWN.Process(target=reader_main, args=(str(path), 1000, go, stop, out))
    reader.start()
    logs = [tmp_path / f"w{w}.log" for w in range(3)]
    writers = [SPAWN.Process(target=writer_main,
                             args=(str(path), w, batches if w else w0_batches, str(logs[w]),
                                   0.0005, True, go))
               for w in range(3)]
    for p in writers:
        p.start()
    wait_for(lambda: logs[0].exists() and len(read_log(logs[0])[1]) >= 100)
    os.kill(writers[0].pid, signal.SIGKILL)
    for p in writers:
        p.join(60)
    assert writers[0].exitcode == -signal.SIGKILL
    assert writers[1].exitcode == 0 and writers[2].exitcode == 0
    stop.set()
    result = out.get(timeout=30)
    reader.join(30)
    assert result["samples"] > 0 and result["bad"] == 0 and result["regressions"] == 0

    count, fields = read_visible(path)
    assert len(bad_rows(*fields)) == 0  # no torn frame
    ids = fields[0][:, 0].astype(np.int64)
    assert len(set(ids.tolist())) == count  # no frame twice
    writer_of, seq_of = ids // 100_000, (ids % 100_000) // N
    expected = 0
    for w in range(3):
        started, done = read_log(logs[w])
        seqs = seq_of[writer_of == w]
        visible = sorted(set(seqs.tolist()))
        for s in visible:  # every batch is whole, its frames in order and consecutive
            at = np.flatnonzero((writer_of == w) & (seq_of == s))
            assert len(at) == N and (np.diff(at) == 1).all()
            np.testing.assert_array_equal(ids[at], [frame_id(w, s, j) for j in range(N)])
        assert (np.diff(seqs[::N]) > 0).all()  # a writer's batches in the order it made them
        if w:
            assert visible == done == list(range(batches))  # survivors lost nothing
        else:
            assert 100 <= len(done) < w0_batches  # killed mid-run
            in_flight = sorted(set(started) - set(done))
            assert len(in_flight) <= 1
            assert visible in (done, done + in_flight)  # the batch being written: all or none
        expected += len(visible) * N
    assert count == expected  # the count is exact
    # The buffer opens again with every frame.
    with ReplayBuffer.open(path) as buf:
        assert buf.count == count
        batch = buf.sample(2000, 10**6, np.random.default_rng(5))
        assert len(bad_rows(*batch)) == 0
    print("reader:", result, "frames:", count)
