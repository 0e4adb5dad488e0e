"""Atomic, strict TensorFlow 2 checkpoints with run counters.

Used by the policy learner and the world-model learner (save, backup, resume), and by the
interactors, evaluators and the policy learner to load the newest complete checkpoint of another
process (restore, often with strict=False for a partial view).

On-disk layout of one checkpoint directory (e.g. `<run>/checkpoints/policy/`):

    ckpt-<n>/                      one complete checkpoint, n = 1, 2, 3, ...
        variables.index            tf.train.Checkpoint index (object graph + variable table)
        variables.data-00000-of-00001
        counters.json              {"epoch": int, "updates": int, "frames": int, "hours": float}
    latest.json                    {"checkpoint": "ckpt-<n>", "counters": {...}}
    .tmp-ckpt-<n>-<pid>/           only while a save is in progress (or after a crash mid-save,
                                   until the next save, which deletes it once <pid> is gone)

Write order: the files are written into `.tmp-ckpt-<n>-<pid>/`, each file and then the folder
are fsynced, and the folder is renamed to `ckpt-<n>` in one step (and its parent fsynced); only
then is `latest.json` replaced atomically (written to a temporary name, fsynced, `os.replace`);
then all but the newest 3 `ckpt-*` folders are deleted. A reader that follows `latest.json` (or,
failing that, takes the highest-numbered `ckpt-<n>` holding its index file) therefore never sees
a partial checkpoint, and after a machine crash the pointer never names files that did not
reach the disk. The counters are also stored in the checkpoint itself as variables
(`counters/epoch`, `updates`, `frames` as int64, `hours` as float64), and `restore_checkpoint`
returns the values read from there.

Reading: `load_newest` loads the newest checkpoint that can be read. A checkpoint whose files
are gone, incomplete or damaged (UnreadableCheckpoint) is read again a few times while it stays
in place (RETRIES, RETRY_SECONDS) and then passed over for the next older one, which the caller
says in one line (`describe_skipped`); one deleted while being read (a newer save pruned it) is
not counted as unreadable: the newest is looked up again. A checkpoint that does not match the
objects (CheckpointError) is not passed over: an older one would not match either.

Backups: `backup_checkpoint` copies the latest complete checkpoint to `<backups_dir>/<updates>/`
(through a temporary sibling folder and a rename), named by the updates in its counters.json: the
update it holds, which is the learner's last epoch, not the learner's count when it backs up. A
backup folder that already exists is never replaced.

This module is the only one that spells the file names above: other modules reach them through
`pointer_file`, `read_counters` and `latest_counters`.

Importing this module does not import TensorFlow: `is_complete` and `latest_checkpoint` read only
the layout above, so a process can find a checkpoint (and report a wrong folder at once) before
it loads TensorFlow quietly (runtime.import_tensorflow).
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import NamedTuple

import util
from errors import UserError

PREFIX = "variables"
POINTER_FILE = "latest.json"  # in a checkpoint directory: names its newest complete checkpoint
COUNTERS_FILE = "counters.json"  # in each checkpoint folder: its counters, read without TF
KEEP = 3
RETRIES = 3  # reads of a checkpoint that stays in place but cannot be read, before passing it over
RETRY_SECONDS = 0.1  # between those reads
_CKPT_RE = re.compile(r"^ckpt-(\d+)$")
_COUNTERS = (
    ("epoch", "int64"),
    ("updates", "int64"),
    ("frames", "int64"),
    ("hours", "float64"),
)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, incomplete, or does not match the objects restored into it."""


class UnreadableCheckpoint(CheckpointError):
    """A checkpoint's files are gone, incomplete or damaged: it cannot be read at all (unlike a
    checkpoint that reads but does not match the objects). `path` is the checkpoint, `why` a
    short reason; from load_newest, `skipped` lists every (path, why) that could not be read."""

    def __init__(self, message: str, path: str = "", why: str = "",
                 skipped: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.path, self.why, self.skipped = path, why, skipped


def _unreadable(path: str, error: BaseException) -> UnreadableCheckpoint:
    first = (str(error).strip().splitlines() or [""])[0][:200]
    why = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return UnreadableCheckpoint(
        f"checkpoint {path} could not be read ({why}); its files were deleted while reading or "
        "are damaged: load_newest() passes over it to the newest one that reads.", path, why)


def _counters_module(values: dict | None = None):
    """The run counters as a tf.Module of variables (`counters/epoch`, ... in the checkpoint)."""
    import tensorflow as tf

    module = tf.Module(name="counters")
    values = values or {}
    for key, dtype in _COUNTERS:
        setattr(module, key, tf.Variable(tf.cast(values.get(key, 0), dtype), name=key))
    return module


def _counter_values(module) -> dict:
    """{"epoch": int, "updates": int, "frames": int, "hours": float} of a _counters_module."""
    out = {}
    for key, dtype in _COUNTERS:
        value = getattr(module, key).numpy()
        out[key] = int(value) if dtype == "int64" else float(value)
    return out


def _numbered(directory: str) -> list[int]:
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        match = _CKPT_RE.match(name)
        if match and is_complete(os.path.join(directory, name)):
            found.append(int(match.group(1)))
    return sorted(found)


def is_complete(path: str | os.PathLike) -> bool:
    """Whether the folder `path` holds a complete checkpoint: its index and its counters.json
    (a save writes both before the folder gets its final name)."""
    return os.path.isfile(os.path.join(path, PREFIX + ".index")) and os.path.isfile(
        os.path.join(path, COUNTERS_FILE)
    )


def _fsync(path: str) -> None:
    """Flush the file or folder `path` to the disk (a folder: its entries, such as a rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: str) -> None:
    """fsync every file in `folder`, then `folder` itself."""
    for name in sorted(os.listdir(folder)):
        if os.path.isfile(os.path.join(folder, name)):
            _fsync(os.path.join(folder, name))
    _fsync(folder)


def _checkpoint_for(objects: dict, counters):
    """A tf.train.Checkpoint of `objects` and the counters module."""
    import tensorflow as tf

    if "counters" in objects:
        raise ValueError("the name 'counters' is reserved for the run counters; rename the object.")
    return tf.train.Checkpoint(counters=counters, **objects)


_TMP_RE = re.compile(r"^\.tmp-ckpt-\d+-(\d+)$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _remove_dead_temporaries(directory: str) -> None:
    """Delete the `.tmp-ckpt-<n>-<pid>` folders of saves whose process is gone (killed
    mid-save): they are never renamed into place and only take space."""
    for name in os.listdir(directory):
        m = _TMP_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def save_checkpoint(directory: str, objects: dict, counters: dict) -> str:
    """Write a complete checkpoint of `objects` (name -> tf.Module) and the run counters
    (epoch, updates, frames, hours) as `directory/ckpt-<n>`; return its path."""
    os.makedirs(directory, exist_ok=True)
    existing = [int(m.group(1)) for m in (_CKPT_RE.match(n) for n in os.listdir(directory)) if m]
    n = max(existing, default=0) + 1
    values = {key: counters.get(key, 0) for key, _ in _COUNTERS}
    values = {k: (float(v) if k == "hours" else int(v)) for k, v in values.items()}
    _remove_dead_temporaries(directory)
    tmp = os.path.join(directory, f".tmp-ckpt-{n}-{os.getpid()}")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    final = os.path.join(directory, f"ckpt-{n}")
    try:
        os.makedirs(tmp)
        _checkpoint_for(objects, _counters_module(values)).write(os.path.join(tmp, PREFIX))
        util.atomic_write_json(os.path.join(tmp, COUNTERS_FILE), values)
        _fsync_folder(tmp)  # TensorFlow closes its files without fsync
        os.rename(tmp, final)
    except BaseException:  # a full disk, an interrupt: the partial folder goes, its space too
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync(directory)  # the rename, before the pointer names the folder
    util.atomic_write_json(
        pointer_file(directory), {"checkpoint": f"ckpt-{n}", "counters": values}
    )
    _fsync(directory)  # the pointer's rename
    for old in _numbered(directory)[:-KEEP]:
        shutil.rmtree(os.path.join(directory, f"ckpt-{old}"), ignore_errors=True)
    return final


def pointer_file(directory: str | os.PathLike) -> Path:
    """The pointer file of a checkpoint directory (`latest.json`); it exists once the directory
    holds a complete checkpoint, and its modification time changes with every save."""
    return Path(directory) / POINTER_FILE


def read_counters(path: str | os.PathLike) -> dict:
    """The counters of one checkpoint folder (a `ckpt-<n>` or a numbered backup), read from its
    counters.json without TensorFlow; {} when the file is missing or damaged."""
    try:
        with open(Path(path) / COUNTERS_FILE) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def latest_checkpoint(directory: str) -> str | None:
    """The path of the newest complete checkpoint in `directory`, or None if there is none."""
    try:
        with open(pointer_file(directory)) as f:
            path = os.path.join(directory, json.load(f)["checkpoint"])
        if is_complete(path):
            return path
    except (OSError, ValueError, KeyError, TypeError):
        pass
    numbers = _numbered(directory)
    return os.path.join(directory, f"ckpt-{numbers[-1]}") if numbers else None


def complete_checkpoints(directory: str) -> list[str]:
    """The paths of the complete checkpoints in `directory`, newest first: the one `latest.json`
    names (latest_checkpoint's), then the others from the highest number down."""
    numbered = [os.path.join(directory, f"ckpt-{n}") for n in reversed(_numbered(directory))]
    latest = latest_checkpoint(directory)
    return ([latest] if latest else []) + [p for p in numbered if p != latest]


class Loaded(NamedTuple):
    """What load_newest loaded."""

    path: str  # the checkpoint loaded
    counters: dict  # what `load` returned: its counters
    skipped: tuple[tuple[str, str], ...]  # (path, why) of the newer ones that could not be read


def describe_skipped(skipped: tuple[tuple[str, str], ...]) -> str:
    """'<path> (<why>)' for each checkpoint passed over, for a caller's one log line."""
    return ", ".join(f"{path} ({why})" for path, why in skipped)


def load_newest(directory: str, load: Callable[[str], dict], skip: Collection[str] = (),
                usable: Callable[[str], bool] | None = None) -> Loaded | None:
    """Load the newest complete checkpoint of `directory` that can be read, with `load(path)`
    (which returns its counters, e.g. restore_checkpoint of some objects); None when there is
    no complete checkpoint (not in `skip`, passing `usable` if given).

    `load` failing with UnreadableCheckpoint (or FileNotFoundError): a checkpoint deleted in the
    meantime (a newer save pruned it) sends the search back to the newest; one still in place is
    read again up to RETRIES times, RETRY_SECONDS apart, then passed over for the next older one
    and listed in `skipped`. When every candidate is unreadable, raises UnreadableCheckpoint with
    all of them in its `skipped`. Any other CheckpointError (the checkpoint does not match the
    objects) is raised at once: no older checkpoint would match either.
    """
    passed: set[str] = set(skip)
    skipped: list[tuple[str, str]] = []
    while True:
        candidates = [p for p in complete_checkpoints(directory)
                      if p not in passed and (usable is None or usable(p))]
        if not candidates:
            if not skipped:
                return None
            raise UnreadableCheckpoint(
                f"no checkpoint in {directory} can be read: {describe_skipped(tuple(skipped))}; "
                "move the damaged ones out (a numbered backup can be copied in as a newer "
                "ckpt-<n>), or remove the folder to start afresh.", skipped=tuple(skipped))
        path = candidates[0]
        for attempt in range(RETRIES):
            try:
                return Loaded(path, load(path), tuple(skipped))
            except (UnreadableCheckpoint, FileNotFoundError) as e:
                error = e
            if not is_complete(path):
                break  # deleted while we read it: look for the newest again
            if attempt + 1 < RETRIES:
                time.sleep(RETRY_SECONDS)
        else:
            passed.add(path)
            why = error.why if isinstance(error, UnreadableCheckpoint) and error.why else \
                f"{type(error).__name__}: {error}"
            skipped.append((path, why))


def latest_counters(directory: str | os.PathLike) -> dict | None:
    """The counters of the newest checkpoint in `directory`, read from its `latest.json` (no
    TensorFlow); None when there is no pointer or the checkpoint it names is gone."""
    pointer = util.read_json(pointer_file(directory))
    if not isinstance(pointer, dict) or not isinstance(pointer.get("counters"), dict):
        return None
    if not os.path.isdir(os.path.join(directory, str(pointer.get("checkpoint", "")))):
        return None
    return dict(pointer["counters"])


def _escape(name: str) -> str:
    # tf.train.Checkpoint's key escaping: "." -> ".S", "/" -> ".."
    return name.replace(".", ".S").replace("/", "..")


def _expected_variables(root) -> dict:
    """The variables the object graph of the tf.train.Checkpoint `root` would save, by checkpoint
    key (breadth first, each variable under its first path, as tf.train.Checkpoint names them)."""
    import tensorflow as tf

    found: dict[str, tf.Variable] = {}
    seen = {id(root)}
    queue = [((), root)]
    while queue:
        path, obj = queue.pop(0)
        if isinstance(obj, tf.Variable):
            found["/".join(path) + "/.ATTRIBUTES/VARIABLE_VALUE"] = obj
            continue
        children = tf.train.TrackableView(obj).children(obj)
        for name, child in children.items():
            if id(child) in seen:
                continue
            seen.add(id(child))
            queue.append(((*path, _escape(name)), child))
    return found


def _expected_keys(root) -> dict[str, tuple]:
    """The checkpoint keys of `root`'s variables, with their shapes."""
    return {key: tuple(var.shape.as_list()) for key, var in _expected_variables(root).items()}


def _stored_shapes(reader) -> dict[str, tuple]:
    """The variable keys a checkpoint holds, with their shapes (from tf.train.load_checkpoint)."""
    return {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def _stored_keys(prefix: str) -> dict[str, tuple]:
    import tensorflow as tf

    return _stored_shapes(tf.train.load_checkpoint(prefix))


def _describe(names: list[str]) -> str:
    shown = [n.replace("/.ATTRIBUTES/VARIABLE_VALUE", "") for n in sorted(names)[:5]]
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(shown) + more


def compare_variables(path: str, objects: dict) -> list[str]:
    """What a strict restore of `objects` from the checkpoint `path` would refuse, without
    restoring anything: one text per variable whose shape differs ("name (checkpoint) vs
    (objects)"), that the objects lack, or that the checkpoint lacks. Empty when they match."""
    root = _checkpoint_for(objects, _counters_module())
    stored = _stored_keys(os.path.join(path, PREFIX))
    expected = _expected_keys(root)
    tail = "/.ATTRIBUTES/VARIABLE_VALUE"
    out = [f"{k.replace(tail, '')} {stored[k]} vs {expected[k]}" for k in sorted(expected)
           if k in stored and stored[k] != expected[k]]
    out += [f"{k.replace(tail, '')} only in the new config" for k in sorted(expected)
            if k not in stored]
    out += [f"{k.replace(tail, '')} only in the checkpoint" for k in sorted(stored)
            if k not in expected]
    return out


def restore_checkpoint(path: str, objects: dict, strict: bool = True) -> dict:
    """Restore `objects` (name -> tf.Module, as given to save_checkpoint) from the checkpoint
    folder `path` and return its counters.

    strict=True: every variable of `objects` must be in the checkpoint with the same shape and
    every variable in the checkpoint must be matched, or CheckpointError is raised before any
    variable changes. strict=False restores what matches (for partial views such as the policy
    alone) and still refuses a shape mismatch. A checkpoint whose files are gone, incomplete or
    damaged raises UnreadableCheckpoint, also before any variable changes.
    """
    import tensorflow as tf

    prefix = os.path.join(path, PREFIX)
    if not is_complete(path):
        raise UnreadableCheckpoint(
            f"{path} is not a complete checkpoint (no {PREFIX}.index or counters.json); "
            "use latest_checkpoint() to find a complete one.", path, "not complete")
    counters = _counters_module()
    root = _checkpoint_for(objects, counters)
    # A damaged file fails as an OpError (DataLossError: a checksum), or, cut short, as an
    # IndexError ("Read less bytes than requested").
    unreadable = (tf.errors.OpError, ValueError, IndexError, OSError)
    try:
        reader = tf.train.load_checkpoint(prefix)
        stored = _stored_shapes(reader)
    except unreadable as e:
        raise _unreadable(path, e) from e
    variables = _expected_variables(root)
    expected = {key: tuple(var.shape.as_list()) for key, var in variables.items()}
    _refuse_mismatch(path, objects, expected, stored, strict)
    # Every value is read before any variable changes, so a failed read leaves the objects as
    # they were. Reading the tensors directly is what tf.train.Checkpoint.read does in the end,
    # without its per-variable Python machinery (about 20 ms for a world model, once per epoch).
    try:
        values = {key: reader.get_tensor(key) for key in expected if key in stored}
    except unreadable as e:
        raise _unreadable(path, e) from e
    for key, value in values.items():
        variable = variables[key]
        if value.dtype != variable.dtype.as_numpy_dtype:
            raise CheckpointError(
                f"checkpoint {path} stores {key.replace('/.ATTRIBUTES/VARIABLE_VALUE', '')} as "
                f"{value.dtype}, but the object holds {variable.dtype.name}; the config or code "
                "that wrote it differs from this one."
            )
    for key, value in values.items():
        variables[key].assign(value)
    return _counter_values(counters)


def _refuse_mismatch(path: str, objects: dict, expected: dict[str, tuple],
                     stored: dict[str, tuple], strict: bool) -> None:
    """Raise CheckpointError when restoring `objects` (their variables' keys and shapes:
    `expected`) from the checkpoint `path` (`stored`) would be wrong: any shape mismatch; with
    `strict`, any variable on one side only; without it, no variable in common."""
    missing = [k for k in expected if k not in stored]
    extra = [k for k in stored if k not in expected]
    mismatched = [k for k in expected if k in stored and expected[k] != stored[k]]
    if mismatched:
        detail = ", ".join(
            f"{k.replace('/.ATTRIBUTES/VARIABLE_VALUE', '')} {stored[k]} vs {expected[k]}"
            for k in mismatched[:5]
        )
        raise CheckpointError(
            f"checkpoint {path} holds variables of other shapes than the objects being restored "
            f"(checkpoint vs objects: {detail}); the config that wrote it differs from this one."
        )
    if strict and (missing or extra):
        parts = []
        if missing:
            parts.append(f"lacks {len(missing)} variables the objects need ({_describe(missing)})")
        if extra:
            parts.append(f"holds {len(extra)} variables nothing matches ({_describe(extra)})")
        raise CheckpointError(
            f"checkpoint {path} "
            + " and ".join(parts)
            + "; restore the objects it was saved from, or pass strict=False for a partial load."
        )
    if not strict and not [k for k in expected if k in stored and not k.startswith("counters/")]:
        raise CheckpointError(
            f"checkpoint {path} holds none of the variables of {sorted(objects)}; "
            "check that it was written by the process you meant to load from."
        )


class Backup(NamedTuple):
    """What backup_checkpoint did."""

    path: str  # the numbered backup folder, <backups_dir>/<updates>
    note: str | None  # one line when a different backup of that number was there and kept


def backup_checkpoint(directory: str, backups_dir: str) -> Backup:
    """Copy the latest complete checkpoint of `directory` to `backups_dir/<updates>/`, named by
    the updates its counters hold (the update it was saved at).

    A backup of that number that exists already is left as it is, and nothing raises: holding the
    same files (the same checkpoint backed up again: a resume reached it again, or two backups
    fell between two epochs) it is simply kept; holding other files (a resume from an older
    checkpoint redid those updates) it is kept too, and `note` says so.
    """
    source = latest_checkpoint(directory)
    if source is None:
        raise CheckpointError(
            f"{directory} holds no complete checkpoint to back up; save one first."
        )
    updates = read_counters(source).get("updates")
    if not isinstance(updates, int):
        raise CheckpointError(
            f"{os.path.join(source, COUNTERS_FILE)} does not say at which update the checkpoint "
            "was saved, so its backup cannot be named; save a new checkpoint first."
        )
    final = os.path.join(backups_dir, str(updates))
    if os.path.exists(final):
        if _same_files(source, final):
            return Backup(final, None)
        return Backup(final, f"backup {final} already holds another checkpoint of {updates} "
                             f"updates (from before a resume); kept it, did not copy {source}")
    os.makedirs(backups_dir, exist_ok=True)
    tmp = os.path.join(backups_dir, f".tmp-{updates}-{os.getpid()}")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    _fsync_folder(tmp)
    os.rename(tmp, final)
    _fsync(backups_dir)
    return Backup(final, None)


def _same_files(a: str, b: str) -> bool:
    """Whether the folders `a` and `b` hold the same file names with the same bytes."""
    names = sorted(os.listdir(a))
    if names != sorted(os.listdir(b)):
        return False
    return all(filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False) for n in names)
