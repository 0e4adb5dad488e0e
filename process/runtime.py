"""How every child process of a run starts, and the flags the master shares with them.

`master.py` builds one `ProcessSpec` per child (process/roles.py) and starts
`child_main(spec, stop, finish, lock)` with the `spawn` method. `child_main` runs in the child
before anything imports TensorFlow: it sets `CUDA_VISIBLE_DEVICES` (the learner's GPU, or none),
ignores Ctrl-C (the master handles it and sets `stop`), turns SIGTERM into `stop` (and, in the
start-up, an exit: below), imports TensorFlow quietly and without Keras (`import_tensorflow`: no
start-up lines, no cuInit error; `master.py --verbose` keeps them), then calls the entry
function the role table names. A crash writes the traceback to `log/<process>.err` (the master
quotes its end) and exits with status 1; a crash on a full disk (any write: a checkpoint, a log
line, a TensorBoard summary, util.disk_full) exits with DISK_FULL_EXIT instead, its .err (if it
can still be written) ending with `disk full: <the path it could not write>`, and the master says
which disk to free. Each child's stdout and stderr go to `log/<process>.out`. If the master
itself dies (even by SIGKILL), the kernel ends every child or asks it to stop (below), so no
orphan keeps training.

Start-up and work. A child begins in its start-up (importing TensorFlow, building, restoring,
the first compile): on a loaded machine it may take minutes, and it holds nothing to save.
Until the child calls `holding_work()` (a learner after its first update, an interactor after
its first step, an evaluator with its first policy), the master's death makes the kernel send
it SIGKILL, wherever it is; a SIGTERM sets `stop` and ends it (exit status 0) as soon as it runs
Python again. After that call, both only set `stop`: the child saves its work (a learner's
final checkpoint) and exits. A child ended in its start-up leaves what a SIGKILL leaves, and
nothing half-written is published: every file another process reads is written whole or not
at all (a checkpoint's temporary folder is renamed into place, a log line is appended whole).

Each child also receives a descriptor of the run's lock (rundir.RunLock) and keeps it open until
it exits: the run stays locked until the last of its processes is gone.

`check_shapes_main` is a short-lived child of its own: before a resume with a changed config,
it builds each learner's variables from the new config (in a scratch folder) and compares them
with the run's checkpoints, so a shape change is refused before any process of the run starts.

Flags (`Flag`, shared by the master and every child): `stop` means "write a final checkpoint
and exit now" (Ctrl-C, SIGTERM, a dead sibling); `finish` means "the frame budget is reached and
every interactor has exited" (the master sets it when the last interactor left, so no frame
arrives after it): learners do the updates still owed for the frames collected, checkpoint and
exit.

Heartbeats (`Heartbeats`, in shared memory like the flags, one slot per child): `child_main`
installs the child's slot, and the child's main loop and every wait in it call `beat()` (one
clock read and one 8-byte store), so a child that waits for frames, for another learner or for
the learners (a paused interactor) still beats; only a process that runs no Python at all (stopped,
or stuck in a call that never returns: a hung GPU call, a dead network mount) falls silent. A
child calls `started()` once it has done one round of its first-time work (a learner: its first
checkpoint after an update, which includes compiling; an interactor: its first step with a
loaded policy; an evaluator: its first step); until then its allowance is longer
(master.py's --stall-timeout).
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import time
import traceback
import warnings

import util
from process import roles
from process.roles import ProcessSpec

DISK_FULL_EXIT = 28  # a child's exit status after a write found the disk full (ENOSPC is 28)
DISK_FULL_LINE = "disk full: "  # the last line of its log/<process>.err, then the path


class Flag:
    """A yes/no flag in shared memory, with the set/is_set/wait calls of an Event but no lock.

    A multiprocessing.Event guards its value with a lock, which deadlocks in two ways that
    happen here: a SIGTERM handler that sets the event while its own process is inside
    is_set() or wait() (holding the lock), and a master SIGKILLed while holding it (every child
    then blocks forever). Setting a Flag is one store and reading it one load, so a signal
    handler may set it and a process may die at any moment. `wait` polls every POLL seconds.
    Create it in the master and pass it to the children as a Process argument.
    """

    POLL = 0.005

    def __init__(self, ctx=None):
        self._value = (ctx or multiprocessing.get_context("spawn")).RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or `timeout` seconds passed; return whether it is set."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._value.value:
            left = self.POLL if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.POLL, left))
        return True


class Heartbeats:
    """The children's signs of life, read by the master's stall check (master.Supervisor).

    Slot i (the i-th child) holds the time of its last beat (time.monotonic_ns, one clock for
    every process of a machine; 0 before the first) and whether it has `started` (see the module
    docstring). Like Flag: shared memory without a lock (each slot has one writer, and an
    aligned 8-byte store or load is atomic); create it in the master and pass `heart(i)` to
    child i as a Process argument.
    """

    def __init__(self, count: int, ctx=None):
        self._array = (ctx or multiprocessing.get_context("spawn")).RawArray("q", 2 * count)

    def heart(self, slot: int) -> Heart:
        return Heart(self._array, slot)

    def last(self, slot: int) -> tuple[int, bool]:
        """(monotonic ns of the last beat, 0 if none yet; whether the child has started)."""
        return int(self._array[2 * slot]), bool(self._array[2 * slot + 1])


class Heart:
    """One child's slot of Heartbeats."""

    def __init__(self, array, slot: int):
        self._array = array
        self._slot = slot

    def beat(self) -> None:
        self._array[2 * self._slot] = time.monotonic_ns()

    def started(self) -> None:
        self._array[2 * self._slot + 1] = 1
        self.beat()


_heart: Heart | None = None  # this process's slot, once child_main installed it
_stop = None  # this process's `stop` flag, once child_main installed it
_holding = False  # whether this process holds work that a stop must save (holding_work)


def beat() -> None:
    """A sign of life of this process (see the module docstring); nothing outside a run's child
    process."""
    if _heart is not None:
        _heart.beat()


def started() -> None:
    """This process has done its first-time work (the module docstring); its stall allowance is
    master.py's --stall-timeout from now on."""
    if _heart is not None:
        _heart.started()


def holding_work() -> None:
    """This process's start-up is over: it holds work that a stop must save (a learner's
    updates, an interactor's summaries). From now on SIGTERM and the master's death set `stop`
    instead of ending it at once (the module docstring). Nothing outside a run's child process;
    a second call does nothing."""
    global _holding
    if _stop is None or _holding:
        return
    _holding = True
    _stop_when_parent_dies(_stop)


def _on_sigterm(name: str):
    """The child's SIGTERM handler: set `stop`; during the start-up, also exit at once."""
    def handler(*_):
        _stop.set()
        if not _holding:
            # os.write, not print: the handler may run inside a print of the main code.
            os.write(1, f"{name}: SIGTERM during its start-up, nothing to save; exiting\n"
                     .encode())
            os._exit(0)
    return handler


def _redirect_output(path) -> None:
    """Send this process's stdout and stderr (C libraries included) to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _end_when_parent_dies() -> None:
    """During the start-up: ask the kernel for SIGKILL when the master dies, even by SIGKILL."""
    parent = multiprocessing.parent_process()
    if not util.signal_when_parent_dies(signal.SIGKILL):
        return  # not Linux: the master's own shutdown still stops every child
    if parent is not None and os.getppid() != parent.pid:
        os._exit(0)  # the master died before the request was in place


def _stop_when_parent_dies(stop) -> None:
    """Once holding work: ask the kernel for SIGTERM (which sets `stop`) when the master dies,
    even by SIGKILL."""
    parent = multiprocessing.parent_process()
    if not util.signal_when_parent_dies():
        return  # not Linux: the master's own shutdown still stops every child
    if parent is not None and os.getppid() != parent.pid:
        stop.set()  # the master died before the request was in place


# What TensorFlow prints while it loads, before its logging is set up and whatever
# TF_CPP_MIN_LOG_LEVEL says: absl's notice and its info/warning lines, e.g.
# "I0000 00:00:1796047663.168072    3465 port.cc:153] oneDNN custom operations are on...".
_STARTUP_NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\)"
                            r"|[IW]\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] ")
_NOISY_LIBRARIES = r"(tensorflow|tensorboard|keras|absl|google|gymnasium|pygame|pybullet)"


def _import_tensorflow_without_keras():
    """`import tensorflow`, leaving out the Keras 3 import that TensorFlow (2.16 and later) makes
    at its own import (`keras.src.optimizers`, for its SavedModel registry; it pulls in all of
    Keras and matplotlib). Nothing here uses Keras, and leaving it out saves each process about
    1.2 s of CPU and 80 MB of memory (docs/tests.md). TensorFlow skips that import when
    TF_USE_LEGACY_KERAS is set and the `tf_keras` package is absent, so the variable is set for
    the import only: it is gone afterwards, and `tf.keras`, read only when first used, is Keras 3
    as usual. Anything else (the variable already set, `tf_keras` installed, TensorFlow already
    imported) is a plain `import tensorflow`."""
    if ("tensorflow" in sys.modules or "TF_USE_LEGACY_KERAS" in os.environ
            or importlib.util.find_spec("tf_keras") is not None):
        import tensorflow as tf

        return tf
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    try:
        import tensorflow as tf
    finally:
        del os.environ["TF_USE_LEGACY_KERAS"]
    return tf


def import_tensorflow(verbose: bool = False):
    """Import TensorFlow (if not yet imported) and return it; unless `verbose`, quietly.

    Without the Keras import TensorFlow makes of its own (_import_tensorflow_without_keras).
    Quietly means: TF_CPP_MIN_LOG_LEVEL=3 (which also drops the "failed call to cuInit" error
    of every machine without a GPU), deprecation warnings of the libraries around it ignored,
    and what TensorFlow writes to stderr while loading kept back and passed on without its
    start-up notices. Call it before anything else imports TensorFlow.
    """
    if verbose or "tensorflow" in sys.modules:
        return _import_tensorflow_without_keras()
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=_NOISY_LIBRARIES)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            tf = _import_tensorflow_without_keras()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines()
            kept = [line for line in lines if line.strip() and not _STARTUP_NOISE.match(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
    return tf


def child_main(spec: ProcessSpec, stop, finish, lock=None, heart: Heart | None = None) -> None:
    """Entry point of every child process (see the module docstring). `lock`: the run's lock
    (rundir.InheritedLock), kept open until this process exits so the run stays owned while
    any of its processes lives. `heart`: this child's slot of the master's Heartbeats."""
    global _heart, _stop
    _heart, _stop = heart, stop
    beat()
    os.environ["CUDA_VISIBLE_DEVICES"] = spec.cuda_visible_devices
    # Each child's output goes to log/<process>.out so the master's console stays readable;
    # TensorFlow's start-up lines are left out of it unless the run is --verbose.
    _redirect_output(spec.run.log / f"{spec.name}.out")
    print(f"{spec.name} (pid {os.getpid()}): CUDA_VISIBLE_DEVICES="
          f"{spec.cuda_visible_devices!r}", flush=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm(spec.name))
    _end_when_parent_dies()  # until holding_work()
    try:
        import_tensorflow(spec.verbose)
        roles.load(spec.row.entry)(spec, stop, finish)  # the role table names the function
    except BaseException as e:
        if isinstance(e, SystemExit) and not e.code:
            raise
        text = traceback.format_exc()
        full = util.disk_full(e)
        if full is not None:
            text += f"{DISK_FULL_LINE}{full}\n"
        for write in (spec.run.error_file(spec.name).write_text,
                      lambda t: (sys.stderr.write(f"[{spec.name}] {t}"), sys.stderr.flush())):
            try:
                write(text)
            except OSError:
                pass  # the disk is full: the exit status still says so
        os._exit(1 if full is None else DISK_FULL_EXIT)


def check_shapes_main(spec: ProcessSpec, learner_names: list[str], conn) -> None:
    """Compare the variables each learner of `learner_names` would build from `spec.config` with its
    newest checkpoint in `spec.run`; send ("ok", [difference, ...]) or ("error", traceback)
    through `conn`. Writes nothing in the run folder: the learners are built against a
    scratch folder."""
    import dataclasses
    import tempfile

    _end_when_parent_dies()  # it has nothing to save: a dead master ends it at once
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    devnull = os.open(os.devnull, os.O_WRONLY)  # TensorFlow's start-up lines
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        import nn
        from process import checkpoint
        from process.rundir import Progress

        nn.configure_tensorflow(spec.threads or 1)
        differences = []
        with tempfile.TemporaryDirectory(prefix="steve-shapes-") as scratch:
            scratch_run = dataclasses.replace(spec.run, root=scratch)
            Progress(scratch_run.progress_file, create=True)
            for role in learner_names:
                latest = checkpoint.latest_checkpoint(str(spec.run.checkpoint_dir(role)))
                if latest is None:
                    continue
                role_spec = dataclasses.replace(spec, role=role, run=scratch_run)
                learner = role_spec.implementation()(role_spec, Flag(), Flag())
                objects = learner.build()
                differences += [f"{role} {d}" for d in
                                checkpoint.compare_variables(latest, objects)]
        conn.send(("ok", differences))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()
