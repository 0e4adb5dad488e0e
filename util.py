"""Small helpers shared by several modules and processes.

Nothing here touches TensorFlow. The file helpers write a temporary sibling and rename it into
place, so a reader in another process sees either the old file or the new one, never half;
`append_line` adds a whole line to a log or none of it. `disk_full` recognises a write that
found the disk full, whichever library raised it.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import signal
import tempfile
from pathlib import Path

import numpy as np

# What a write that found the disk (or the user's quota) full raises: OSError with one of these
# errnos, or (TensorFlow: checkpoints, summaries) an error carrying the C library's words for them.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_WORDS = re.compile(r"(?:(\S+); )?(?:No space left on device|Disk quota exceeded)")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` whole or not at all (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; these files are for people and tools too
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_line(path: str | os.PathLike, line: str, fsync: bool = False) -> None:
    """Append `line` and a newline to `path` whole or not at all: a write cut short (a full
    disk) is undone, so the next line never continues half of this one. One writer at a time
    (the caller's lock, or a file only its process writes)."""
    data = (line + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            done = 0
            while done < len(data):
                done += os.write(fd, data[done:])
            if fsync:
                os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def disk_full(exc: BaseException | None) -> str | None:
    """When `exc`, or an exception it was raised from or while handling (as a traceback shows
    them: not past `raise ... from None`), says that a write found the disk full
    (DISK_FULL_ERRNOS, or their words in TensorFlow's ResourceExhaustedError): the path it could
    not write ("" when it names none); otherwise None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return str(exc.filename or "")
        found = _DISK_FULL_WORDS.search(str(exc))
        if found:
            return found.group(1) or ""
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None


def mount_point(path: str | os.PathLike) -> Path:
    """The mount point of the file system holding `path` (or its nearest existing ancestor)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def save_png(figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write a matplotlib figure as PNG to a temporary name in the same folder, then rename it
    into place (a reader sees the old picture or the new one, never half of one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        figure.savefig(temporary, format="png", dpi=dpi)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def split_float64(x: np.ndarray) -> np.ndarray:
    """float64 [..., S] -> float32 [..., 2 S]: hi = float32(x), then lo = float32(x - hi)."""
    x = np.asarray(x, np.float64)
    hi = x.astype(np.float32)
    lo = (x - hi.astype(np.float64)).astype(np.float32)
    return np.concatenate([hi, lo], axis=-1)


def join_float64(halves: np.ndarray) -> np.ndarray:
    """The inverse of split_float64: float32 [..., 2 S] -> float64 [..., S]."""
    half = halves.shape[-1] // 2
    return halves[..., :half].astype(np.float64) + halves[..., half:].astype(np.float64)


def read_json(path: str | os.PathLike, default: object = None) -> object:
    """The JSON object at `path`, or `default` when the file does not exist."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def signal_when_parent_dies(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send this process `sig` (SIGTERM by default) when its parent dies, even by
    SIGKILL (prctl PR_SET_PDEATHSIG; a later call replaces the signal); False where that cannot
    be asked (not Linux). Never raises, so it also serves as a subprocess `preexec_fn`. The
    caller checks afterwards whether the parent died before the request was in place
    (`os.getppid()` changed)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except Exception:
        return False
    return True


def format_count(n: float) -> str:
    """12345 -> '12.3k', 2500000 -> '2.50M': compact counts for status lines."""
    n = float(n)
    if abs(n) >= 1e6:
        return f"{n / 1e6:.2f}M"
    if abs(n) >= 1e4:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


def format_duration(seconds: float) -> str:
    """3725 -> '1:02:05'."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# Process lookups through Linux's /proc, for the tools that watch a run's process tree from
# outside (bench/fault_loop.py and the master tests): a run's children are found by parent pid.


def process_descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, their children, ...); empty without /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def process_alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (ended but not yet reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def process_cmdline(pid: int) -> str:
    """The command line of `pid`, arguments joined by spaces; "" when it has ended."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""
