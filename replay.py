"""The run's one replay buffer: a ring of frames on disk, shared by every process of the run.

Who uses it: the master creates it (`ReplayBuffer.create`, after `required_bytes` for its
pre-flight check); interactors `append` batches of frames; the two learners (policy and world
model) `sample` uniformly from their own newest window (each learner passes its own
`replay_size` as `newest`); evaluators never touch it. Any process attaches with
`ReplayBuffer.open`, also after a crash: every frame that was visible before is still there.

Files under the buffer's folder (e.g. `<run>/replay/`):

- `header.bin`  4096 bytes, little-endian uint64 fields:
  0 magic `b"STEVERB1"`, 8 version, 16 obs_dims, 24 action_dims, 32 capacity (what the caller
  asked for), 40 slots (ring size = capacity + margin), 48 max_append (largest single append),
  56 crc32 of bytes 0..55, 64 count (frames ever made visible); version 2 only: 72 state_dims,
  80 crc32 of bytes 72..79. Everything but the count is written once, at creation; afterwards
  the count is the only field that ever changes, and it changes by one aligned 8-byte store, so
  a torn header cannot happen.
- `frames.f32`  `slots` rows of float32, one row per frame laid out as
  `[obs (obs_dims) | next_obs (obs_dims) | action (action_dims) | reward | terminal]`, and in a
  version 2 buffer then `[state (2 state_dims) | next_state (2 state_dims)]`: the simulator state
  the step started from and the one it reached (MuJoCo's qpos and qvel, envwrap.Env.sim_state),
  each float64 value x stored exactly enough for replaying the step (to about 1e-14 relative)
  as two float32 numbers, hi = float32(x) and lo = float32(x - hi), all the his then all the
  los. A buffer without states (state_dims 0, e.g. the Bullet humanoids) is version 1, byte for
  byte the format that came before, and this code reads both.
  Created at full size with every block allocated (`os.posix_fallocate`, or zeros written in
  chunks where the file system cannot allocate), so no write into the map can later find the
  disk full. Frame number f (0-based, counted since creation) lives in row `f % slots`.
- `writer.lock`  empty; writers hold an exclusive `portalocker` (flock) lock on it while they
  append. The kernel drops the lock when its holder dies, even by SIGKILL.
- `layout.json`  the static header fields in words, for people; the code never reads it.

Creation: all four files are written into a hidden temporary folder beside `path`, fsynced, and
the folder is renamed to `path`, so a buffer either exists whole or not at all. Before anything
is created, the free space under `path` is checked against the full size, which creation then
allocates.

Order of writes in `append` (n frames, 1 <= n <= max_append):
1. pack the n rows in private memory;
2. take the writer lock (a thread lock, then the exclusive file lock);
3. read the committed count C;
4. copy the rows into ring rows (C .. C+n-1) % slots; these rows hold frames older than any
   window a reader can draw from now (a reader that stalls is caught by the check below);
5. msync the touched pages of `frames.f32` (with `sync=True`, the default);
6. publish C+n with one aligned 8-byte store into the header's count;
7. release the locks;
8. msync the header (with `sync=True`; outside the lock, since whichever count reaches the
   disk, its rows got there first), then return.
The msyncs start at a page boundary of the kernel's page size (`mmap.PAGESIZE`: 4 KB on x86,
16 KB or 64 KB on some ARM64 kernels) and end within the map, so the 4096-byte header map, smaller
than one page on those kernels, is flushed too.
A writer killed before step 6 leaves unpublished rows that nobody can see and that the next writer
overwrites; a writer killed after step 6 has published a complete batch. So n frames become
visible together, or not at all, and nothing already visible is lost. The page cache holds the
writes as soon as they are made, so process crashes lose nothing even with `sync=False`;
`sync=True` adds the msyncs that keep the same promise across an OS crash or power loss.

Readers take no lock. `sample` reads the count c, draws frames from the window
[c - w, c) with w = min(newest, c, capacity), copies their rows, and reads the count again (c2).
While it copied, writers can only have written frames in [c, c2 + max_append): the ones
published meanwhile and one batch in flight. Those frames land on rows of the window only if
they are a whole ring (`slots` frames) or more past its oldest frame, so the copy is
untouched when

    c2 + max_append - (c - w) <= slots,

i.e. when at most `margin - max_append` frames (16384 - 1024 by default) were published during
the copy, since w <= capacity = slots - margin. `sample` checks this after every copy; when
it fails (a reader stalled for a long time), it retries, and after `_OPTIMISTIC_TRIES` failures
copies under a shared file lock, which waits for writers to finish and keeps them out. The
check assumes loads are not reordered with each other and stores not with each other, which x86
guarantees; on any other machine (`platform.machine()` not x86_64/AMD64/i686..., e.g. ARM64,
whose loads may be reordered: a reader could see the new count before the rows it covers), every
`sample` copies under the shared lock (`lock_free_reads`, counted in `locked_samples`), whose
flock calls order the accesses, so no torn row is ever read.

Sizes: `capacity` is what the caller asked for (the largest `replay_size` of the learners); the
ring has `capacity + margin` rows, margin 16384 frames by default (47 MB at Humanoid sizes, 1.8 MB
at Hopper sizes), and one append holds at most `max_append` = 1024 frames. `required_bytes` gives
the full file size (2.91 GB for 1M frames at Humanoid sizes; simulator states add 16 bytes per
state number and frame, e.g. 192 bytes on Hopper-v5's 108), all of it taken from the disk at
`create` (refused in one sentence when the free space is below it), because a write into an
unallocated page of an mmap on a full disk kills the writer (SIGBUS). Buffers made by earlier
versions were sparse (`truncate`); `open` refuses one when the disk's free space is below the
part not yet allocated.
`sync=False` (per handle) skips the two msyncs: appends get about 50x faster; a process crash
still loses nothing, but an OS crash or power loss may then lose recent frames or leave the
count ahead of rows that never reached the disk.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import platform
import shutil
import struct
import tempfile
import threading
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import portalocker

import util
from errors import UserError

VERSION = 1  # the format without simulator states
VERSION_STATES = 2  # with simulator states (state_dims > 0)
MAGIC = b"STEVERB1"
HEADER_BYTES = 4096
DEFAULT_MAX_APPEND = 1024
DEFAULT_MARGIN = 16384

_HEADER_FILE = "header.bin"
_FRAMES_FILE = "frames.f32"
_LOCK_FILE = "writer.lock"
_LAYOUT_FILE = "layout.json"
_STATIC = struct.Struct("<8sQQQQQQ")  # magic, version, obs, act, capacity, slots, max_append
_CRC_OFFSET = _STATIC.size  # 56
_COUNT_OFFSET = 64
_STATE_DIMS = struct.Struct("<QQ")  # version 2: state_dims, crc32 of the state_dims field
_STATE_DIMS_OFFSET = 72
_OPTIMISTIC_TRIES = 4
# Where loads are not reordered with loads, nor stores with stores (x86's total store order),
# the lock-free check of `sample` holds; platform.machine() names, lower-cased.
_ORDERED_MACHINES = frozenset({"x86_64", "amd64", "i386", "i486", "i586", "i686", "x86"})


class ReplayError(UserError, RuntimeError):
    """A problem with the replay buffer that the user can fix (space, missing or mismatched)."""


class Batch(NamedTuple):
    """A sampled batch of frames, float32; B = batch size."""

    obs: np.ndarray  # [B, obs_dims]
    next_obs: np.ndarray  # [B, obs_dims]
    action: np.ndarray  # [B, action_dims]
    reward: np.ndarray  # [B]
    terminal: np.ndarray  # [B], 1.0 where the episode terminated (not on a time-out)


class StateBatch(NamedTuple):
    """A sampled batch of a buffer with simulator states: Batch's fields, then the states."""

    obs: np.ndarray  # [B, obs_dims] float32
    next_obs: np.ndarray  # [B, obs_dims] float32
    action: np.ndarray  # [B, action_dims] float32
    reward: np.ndarray  # [B] float32
    terminal: np.ndarray  # [B] float32
    state: np.ndarray  # [B, state_dims] float64: the simulator state of obs
    next_state: np.ndarray  # [B, state_dims] float64: the simulator state of next_obs


def _margin_for(max_append: int, margin: int | None) -> int:
    if max_append < 1:
        raise ValueError(f"max_append must be at least 1, not {max_append}")
    margin = DEFAULT_MARGIN if margin is None else int(margin)
    if margin < max_append:
        raise ValueError(f"margin ({margin}) must be at least max_append ({max_append})")
    return margin


def _row_floats(obs_dims: int, action_dims: int, state_dims: int = 0) -> int:
    return 2 * obs_dims + action_dims + 2 + 4 * state_dims


def required_bytes(
    obs_dims: int,
    action_dims: int,
    capacity: int,
    *,
    max_append: int = DEFAULT_MAX_APPEND,
    margin: int | None = None,
    state_dims: int = 0,
) -> int:
    """Bytes on disk of a full buffer of `capacity` frames (ring margin and header included);
    simulator states add 16 bytes per frame and state dimension."""
    slots = int(capacity) + _margin_for(max_append, margin)
    return HEADER_BYTES + slots * _row_floats(int(obs_dims), int(action_dims),
                                              int(state_dims)) * 4


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


def lock_free_reads() -> bool:
    """Whether `sample` may copy without a lock on this machine (x86: see the module docstring);
    elsewhere (ARM64, POWER...) every sample takes the shared lock."""
    return platform.machine().lower() in _ORDERED_MACHINES


def _flush(view: mmap.mmap, begin: int, end: int) -> None:
    """msync bytes [begin, end) of a map: from the start of the page holding `begin` (msync
    takes a page-aligned address; mmap.PAGESIZE is the kernel's page size, 4 KB on x86, 16 KB or
    64 KB on some ARM64 kernels) to `end`, never past the map's end (the 4096-byte header map is
    smaller than one page there, and a range past a map is refused)."""
    start = begin - begin % mmap.PAGESIZE
    view.flush(start, min(end, len(view)) - start)


_ZEROS_CHUNK = 64 << 20  # bytes per write where blocks cannot be allocated otherwise


def _reserve(fd: int, size: int, where: Path) -> None:
    """Make the file `fd` `size` bytes long with every block allocated: posix_fallocate, or,
    on a file system that does not support it, zeros written in chunks; ReplayError when the
    disk under `where` has no room."""
    try:
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS):
                raise
        zeros = memoryview(bytes(min(size, _ZEROS_CHUNK)))
        done = 0
        while done < size:
            done += os.pwrite(fd, zeros[: size - done], done)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ReplayError(f"the disk under {where} has no room left for the replay buffer's "
                          f"{_gb(size)} GB; lower replay_size or choose another "
                          f"--output-root.") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_header(folder: Path, obs_dims: int, action_dims: int, capacity: int, slots: int,
                  max_append: int, state_dims: int) -> None:
    """Write `layout.json` and `header.bin` (count 0, fsynced) of a new buffer into `folder`."""
    version = VERSION_STATES if state_dims else VERSION
    row = "[obs | next_obs | action | reward | terminal"
    if state_dims:
        row += (" | state hi | state lo | next_state hi | next_state lo (state_dims each; "
                "float64 = hi + lo)")
    layout = {
        "version": version,
        "obs_dims": obs_dims,
        "action_dims": action_dims,
        "capacity": capacity,
        "slots": slots,
        "max_append": max_append,
        "row": row + "] float32 little-endian",
        "frame f is in row": "f % slots",
        "count": "uint64 at byte 64 of header.bin; the only field that changes",
    }
    if state_dims:
        layout["state_dims"] = state_dims
        layout["state"] = "the simulator's qpos then qvel (envwrap.Env.sim_state)"
    (folder / _LAYOUT_FILE).write_text(json.dumps(layout, indent=1) + "\n")
    static = _STATIC.pack(MAGIC, version, obs_dims, action_dims, capacity, slots,
                          max_append)
    header = bytearray(HEADER_BYTES)
    header[: _STATIC.size] = static
    struct.pack_into("<Q", header, _CRC_OFFSET, zlib.crc32(static))
    struct.pack_into("<Q", header, _COUNT_OFFSET, 0)
    if state_dims:
        field = struct.pack("<Q", state_dims)
        _STATE_DIMS.pack_into(header, _STATE_DIMS_OFFSET, state_dims, zlib.crc32(field))
    with open(folder / _HEADER_FILE, "wb") as f:
        f.write(header)
        os.fsync(f.fileno())


class ReplayBuffer:
    """A handle on the shared on-disk ring; create with `create`, attach with `open`."""

    def __init__(self, path: Path, *, sync: bool, _private: bool = False) -> None:
        if not _private:
            raise TypeError("use ReplayBuffer.create(...) or ReplayBuffer.open(...)")
        self.path = path
        self.sync = sync
        self.optimistic_retries = 0  # samples re-copied because writers lapped the window
        self.locked_samples = 0  # samples that fell back to the shared lock
        self.lock_free = lock_free_reads()  # else every sample copies under the shared lock
        self._thread_lock = threading.Lock()
        self._closed = True
        self._attach()

    # ----------------------------------------------------------------- creation and attaching

    @staticmethod
    def exists(path: str | os.PathLike) -> bool:
        """True when a complete buffer is at `path` (creation is atomic, so no partial one)."""
        return (Path(path) / _HEADER_FILE).is_file()

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        obs_dims: int,
        action_dims: int,
        capacity: int,
        *,
        max_append: int = DEFAULT_MAX_APPEND,
        margin: int | None = None,
        sync: bool = True,
        state_dims: int = 0,
    ) -> ReplayBuffer:
        """Create an empty buffer folder at `path` and return a handle on it; `state_dims` > 0
        adds the simulator state of every frame (a version 2 buffer)."""
        path = Path(path)
        obs_dims, action_dims, capacity = int(obs_dims), int(action_dims), int(capacity)
        state_dims = int(state_dims)
        if obs_dims < 1 or action_dims < 1 or capacity < 1 or state_dims < 0:
            raise ValueError(
                f"obs_dims, action_dims and capacity must be positive and state_dims 0 or more, "
                f"not {obs_dims}, {action_dims}, {capacity}, {state_dims}"
            )
        margin = _margin_for(max_append, margin)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ReplayError(
                f"a replay buffer (or other files) already exists at {path}; "
                "resume the run or choose another output folder."
            )
        need = required_bytes(obs_dims, action_dims, capacity, max_append=max_append,
                              margin=margin, state_dims=state_dims)
        where = _existing_ancestor(path)
        free = shutil.disk_usage(where).free
        if free < need:
            raise ReplayError(
                f"the disk under {where} has {_gb(free)} GB free but the replay buffer needs "
                f"{_gb(need)} GB; lower replay_size or choose another --output-root."
            )

        slots = capacity + margin
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.creating-", dir=path.parent))
        try:
            with open(tmp / _FRAMES_FILE, "wb") as f:
                _reserve(f.fileno(), slots * _row_floats(obs_dims, action_dims, state_dims) * 4,
                         where)
                os.fsync(f.fileno())
            (tmp / _LOCK_FILE).touch()
            _write_header(tmp, obs_dims, action_dims, capacity, slots, max_append, state_dims)
            _fsync_dir(tmp)
            os.rename(tmp, path)  # replaces an empty folder, fails on a non-empty one
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(path.parent)
        return cls(path, sync=sync, _private=True)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        obs_dims: int | None = None,
        action_dims: int | None = None,
        capacity: int | None = None,
        sync: bool = True,
    ) -> ReplayBuffer:
        """Attach to the buffer at `path`; sizes given here must match the header's."""
        path = Path(path)
        if not cls.exists(path):
            raise ReplayError(
                f"there is no replay buffer at {path}; start a new run instead of resuming, "
                "or point to the run folder that has one."
            )
        buf = cls(path, sync=sync, _private=True)
        asked = {"obs_dims": obs_dims, "action_dims": action_dims, "capacity": capacity}
        for name, want in asked.items():
            have = getattr(buf, name)
            if want is not None and int(want) != have:
                buf.close()
                raise ReplayError(
                    f"the replay buffer at {path} has {name}={have} but this run asks for "
                    f"{name}={int(want)}; resume with the run's original config or start a new run."
                )
        return buf

    def _attach(self) -> None:
        hpath = self.path / _HEADER_FILE
        raw = hpath.read_bytes()
        if len(raw) != HEADER_BYTES or raw[:8] != MAGIC:
            raise ReplayError(f"{hpath} is not a replay buffer header; remove the folder "
                              "or point to another run.")
        fields = _STATIC.unpack_from(raw)
        (crc,) = struct.unpack_from("<Q", raw, _CRC_OFFSET)
        if crc != zlib.crc32(raw[: _STATIC.size]):
            raise ReplayError(f"{hpath} is corrupt (checksum mismatch); the buffer cannot be "
                              "trusted, start a new run.")
        _, version, self.obs_dims, self.action_dims, self.capacity, self.slots, self.max_append = (
            fields
        )
        self.state_dims = 0
        if version == VERSION_STATES:
            self.state_dims, crc = _STATE_DIMS.unpack_from(raw, _STATE_DIMS_OFFSET)
            if crc != zlib.crc32(raw[_STATE_DIMS_OFFSET : _STATE_DIMS_OFFSET + 8]):
                raise ReplayError(f"{hpath} is corrupt (checksum mismatch); the buffer cannot "
                                  "be trusted, start a new run.")
        elif version != VERSION:
            raise ReplayError(f"{hpath} has format version {version}, this code reads "
                              f"{VERSION} and {VERSION_STATES}; use the matching code version "
                              "or start a new run.")
        self._row = _row_floats(self.obs_dims, self.action_dims, self.state_dims)
        fpath = self.path / _FRAMES_FILE
        frame_bytes = self.slots * self._row * 4
        st = os.stat(fpath) if fpath.exists() else None
        if st is None or st.st_size != frame_bytes:
            raise ReplayError(f"{fpath} is missing or has the wrong size; the buffer is "
                              "damaged, start a new run.")
        # A sparse buffer (made by an earlier version): the blocks not yet taken must still fit,
        # or a write would fault later.
        unallocated = max(0, frame_bytes - st.st_blocks * 512)
        free = shutil.disk_usage(self.path).free
        if free < unallocated:
            raise ReplayError(
                f"the disk under {self.path} has {_gb(free)} GB free but the replay buffer "
                f"still needs {_gb(unallocated)} GB; free some space or move the run."
            )

        self._hfd = os.open(hpath, os.O_RDWR)
        self._ffd = os.open(fpath, os.O_RDWR)
        self._lock_file = open(self.path / _LOCK_FILE, "a+b")  # held open for flock
        self._hmap = mmap.mmap(self._hfd, HEADER_BYTES)
        self._fmap = mmap.mmap(self._ffd, frame_bytes)
        # One aligned uint64 view: numpy stores and loads it with single 8-byte moves.
        self._count_cell = np.ndarray((1,), "<u8", buffer=self._hmap, offset=_COUNT_OFFSET)
        self._rows = np.ndarray((self.slots, self._row), "<f4", buffer=self._fmap)
        self._closed = False

    def close(self) -> None:
        """Detach; safe to call twice. The buffer stays on disk."""
        if self._closed:
            return
        self._closed = True
        del self._count_cell, self._rows  # views must go before their maps can close
        self._hmap.close()
        self._fmap.close()
        os.close(self._hfd)
        os.close(self._ffd)
        self._lock_file.close()

    def __enter__(self) -> ReplayBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __reduce__(self):
        raise TypeError("a ReplayBuffer handle cannot be pickled; pass its path and open it")

    # ------------------------------------------------------------------------- the count

    def _check_open(self) -> None:
        if self._closed:
            raise ReplayError(f"the replay buffer handle on {self.path} is closed; open it again.")

    def _load_count(self) -> int:
        return int(self._count_cell[0])

    @property
    def count(self) -> int:
        """Frames ever made visible, by any process, since the buffer was created."""
        self._check_open()
        return self._load_count()

    # ------------------------------------------------------------------------- writing

    def append(self, obs, next_obs, action, reward, terminal, state=None,
               next_state=None) -> int:
        """Append n frames as one unit (all visible together, or none); return the new count.

        Shapes: obs, next_obs [n, obs_dims]; action [n, action_dims]; reward, terminal [n];
        state, next_state [n, state_dims] float64, given exactly when the buffer has states.
        """
        self._check_open()
        rows = self._pack(obs, next_obs, action, reward, terminal, state, next_state)  # [n, row]
        n = len(rows)
        with self._thread_lock:
            portalocker.lock(self._lock_file, portalocker.LockFlags.EXCLUSIVE)
            try:
                committed = self._load_count()
                new = committed + n
                start = committed % self.slots
                first = min(n, self.slots - start)
                self._write_rows(start, rows[:first])
                if first < n:  # the batch wraps past the end of the ring
                    self._write_rows(0, rows[first:])
                self._publish(new)
            finally:
                portalocker.unlock(self._lock_file)
        if self.sync:  # outside the lock: every published count already has its rows on disk
            _flush(self._hmap, _COUNT_OFFSET, _COUNT_OFFSET + 8)
        return new

    def _pack(self, obs, next_obs, action, reward, terminal, state, next_state) -> np.ndarray:
        """The n frames of one append as rows [n, row], after checking every shape."""
        obs = np.asarray(obs, np.float32)
        n = obs.shape[0] if obs.ndim == 2 else -1
        expect = {
            "obs": (obs, (n, self.obs_dims)),
            "next_obs": (np.asarray(next_obs, np.float32), (n, self.obs_dims)),
            "action": (np.asarray(action, np.float32), (n, self.action_dims)),
            "reward": (np.asarray(reward, np.float32), (n,)),
            "terminal": (np.asarray(terminal, np.float32), (n,)),
        }
        if (state is None) != (next_state is None) or (state is not None) != (
                self.state_dims > 0):
            raise ValueError(
                f"append: this buffer has state_dims={self.state_dims}, so give state and "
                f"next_state {'both' if self.state_dims else 'neither'}"
            )
        if self.state_dims:
            expect["state"] = (np.asarray(state, np.float64), (n, self.state_dims))
            expect["next_state"] = (np.asarray(next_state, np.float64), (n, self.state_dims))
        for name, (arr, shape) in expect.items():
            if arr.shape != shape or n < 1:
                raise ValueError(
                    f"append: {name} has shape {arr.shape}, expected {shape} with n >= 1 "
                    f"(obs_dims={self.obs_dims}, action_dims={self.action_dims})"
                )
        if n > self.max_append:
            raise ReplayError(
                f"one append of {n} frames exceeds this replay buffer's limit of "
                f"{self.max_append}; use fewer environments per interactor or append in parts."
            )
        od, ad, sd = self.obs_dims, self.action_dims, self.state_dims
        end = 2 * od + ad  # reward, terminal, then the states
        rows = np.empty((n, self._row), "<f4")  # [n, row]
        rows[:, :od] = expect["obs"][0]
        rows[:, od : 2 * od] = expect["next_obs"][0]
        rows[:, 2 * od : end] = expect["action"][0]
        rows[:, end] = expect["reward"][0]
        rows[:, end + 1] = expect["terminal"][0]
        if sd:
            rows[:, end + 2 : end + 2 + 2 * sd] = util.split_float64(expect["state"][0])
            rows[:, end + 2 + 2 * sd :] = util.split_float64(expect["next_state"][0])
        return rows

    def _write_rows(self, start: int, rows: np.ndarray) -> None:
        self._rows[start : start + len(rows)] = rows
        if self.sync:
            begin = start * self._row * 4
            _flush(self._fmap, begin, begin + rows.nbytes)

    def _publish(self, new_count: int) -> None:
        self._count_cell[0] = new_count  # one aligned 8-byte store: the commit point

    # ------------------------------------------------------------------------- reading

    def _gather(self, slots: np.ndarray) -> np.ndarray:
        # np.take copies whole rows; measured about twice as fast as fancy indexing here, and
        # sorting the slots gained nothing (the rows sit in the page cache).
        return np.take(self._rows, slots, axis=0)  # [B, row]

    def _draw(self, count: int, batch_size: int, newest: int, rng) -> tuple[int, np.ndarray]:
        window = min(newest, count, self.capacity)
        frames = (count - window) + rng.integers(0, window, size=batch_size)  # [B]
        return window, frames % self.slots

    def _visible_count(self, end: int | None, newest: int) -> int:
        """The frame count sampling sees: all frames, or the first `end` of them, whose newest
        window must still be whole in the ring (with room for an append in flight)."""
        count = self._load_count()
        if end is None:
            return count
        visible = min(count, end)
        window = min(newest, visible, self.capacity)
        if count + self.max_append - (visible - window) > self.slots:
            raise ReplayError(
                f"the replay buffer at {self.path} no longer holds the {window} frames before "
                f"frame {end} (it keeps the newest {self.capacity}); ask for a later end or a "
                "smaller window."
            )
        return visible

    def sample(self, batch_size: int, newest: int, rng: np.random.Generator,
               end: int | None = None) -> Batch | StateBatch:
        """Draw `batch_size` frames uniformly, with replacement, from the newest
        min(newest, count, capacity) frames. With `end`: as the buffer was when it held `end`
        frames (count = min(count, end)); for diagnostics of earlier checkpoints."""
        self._check_open()
        batch_size, newest = int(batch_size), int(newest)
        if batch_size < 1 or newest < 1:
            raise ValueError(f"batch_size and newest must be positive, not {batch_size}, {newest}")
        end = None if end is None else int(end)
        if end is not None and end < 1:
            raise ValueError(f"end must be positive, not {end}")
        for _ in range(_OPTIMISTIC_TRIES if self.lock_free else 0):
            count = self._visible_count(end, newest)
            if count == 0:
                raise ReplayError(
                    f"the replay buffer at {self.path} is empty; wait for frames before sampling."
                )
            window, slots = self._draw(count, batch_size, newest, rng)
            rows = self._gather(slots)
            if self._load_count() + self.max_append - (count - window) <= self.slots:
                return self._split(rows)
            self.optimistic_retries += 1
        # Writers keep lapping this reader, or this machine may reorder memory accesses (not
        # x86): copy with them held off. (The thread lock keeps this handle's own appends out
        # too: flock would convert, not share, on one handle.)
        with self._thread_lock:
            portalocker.lock(self._lock_file, portalocker.LockFlags.SHARED)
            try:
                count = self._visible_count(end, newest)
                _, slots = self._draw(count, batch_size, newest, rng)
                rows = self._gather(slots)
            finally:
                portalocker.unlock(self._lock_file)
        self.locked_samples += 1
        return self._split(rows)

    def _split(self, rows: np.ndarray) -> Batch | StateBatch:
        """Rows -> a Batch, or a StateBatch when the buffer has simulator states."""
        od, ad, sd = self.obs_dims, self.action_dims, self.state_dims
        end = 2 * od + ad
        batch = Batch(
            obs=np.ascontiguousarray(rows[:, :od]),
            next_obs=np.ascontiguousarray(rows[:, od : 2 * od]),
            action=np.ascontiguousarray(rows[:, 2 * od : end]),
            reward=np.ascontiguousarray(rows[:, end]),
            terminal=np.ascontiguousarray(rows[:, end + 1]),
        )
        if not sd:
            return batch
        return StateBatch(*batch, state=util.join_float64(rows[:, end + 2 : end + 2 + 2 * sd]),
                          next_state=util.join_float64(rows[:, end + 2 + 2 * sd :]))
