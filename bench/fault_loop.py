"""The fault loop: kill a random process of a small run at a random moment, resume, N times.

    .venv/bin/python bench/fault_loop.py [--rounds 50] [--config tests/configs/tiny_steve.json]
        [--output-root /tmp/steve-fault-loop] [--kill-after 2 20] [--startup-share 0.2]
        [--seed 0] [--max-minutes M]

Run by hand (and for 3 rounds by tests/test_fault_loop.py). It starts `master.py` on the config
(through a derived config, `<output root>/fault_<name>.json`, whose replay ring is large enough
that no frame of the loop is ever overwritten, and with a frame budget the loop never reaches);
each round then:
1. starts master.py (a new run the first time, `--resume` afterwards), its console going to
   `<output root>/round<k>.log`;
2. waits a random time, uniform in --kill-after, counted from the policy learner's first update
   of the round (and, the first time, its first checkpoint, so there is something to resume);
   in a share of the rounds (--startup-share, default 0.2) the kill comes instead at a random
   moment of the start-up (0 to MAX seconds after master.py started);
3. takes what a user relies on just before the kill: the replay count and every visible row,
   greedy.csv's complete lines, and the learners' live update counters (state/progress.bin);
4. sends SIGKILL to one process of the run chosen at random: the master or one of its children
   (learners, interactors, evaluators);
5. waits for every process of the run to exit; one still alive 90 s after the kill is an
   orphan (counted, then killed);
6. checks: the replay count did not decrease; every row visible before is unchanged and every
   visible row is finite; greedy.csv parses whole and begins with its lines from before the kill;
   each learner lost at most one epoch of updates (its live counter before the kill against the
   checkpoint the next round resumes from).
It prints one line per round and then the summary:

    fault_rounds=N lost_epochs_max=X torn_rows=0 orphans=0 failed_rounds=0

`torn_rows` counts replay rows changed or not finite and greedy.csv lines changed or unreadable.
With --max-minutes, no round starts after that much time (the summary counts the rounds run).
The exit status is 0 when every round passed. Writes only under the output root.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

import config as config_lib  # noqa: E402
from process import checkpoint  # noqa: E402
from process.roles import LEARNERS  # noqa: E402
from process.rundir import Progress, RunDir  # noqa: E402
from util import process_alive, process_cmdline, process_descendants  # noqa: E402

BUDGET = 10**9  # frames: the loop never reaches it
REPLAY_SIZE = 2_000_000  # rows: no frame of the loop is ever overwritten
ORPHAN_SECONDS = 90.0
START_SECONDS = 300.0  # how long the first round may take to write a checkpoint


def _process_names(run: RunDir, pids: list[int]) -> dict[int, str]:
    """pid -> process name (policy-learner, interactor-0...), from each child's first line in
    log/<name>.out ("<name> (pid N): ...")."""
    names = {}
    for out in run.log.glob("*.out"):
        try:
            text = out.read_text(errors="replace")
        except OSError:
            continue
        for pid in pids:
            if f"{out.stem} (pid {pid})" in text:
                names[pid] = out.stem
    return names


class Snapshot:
    """What a user relies on, read from the run folder (no process of the run is needed)."""

    def __init__(self, run: RunDir):
        import replay

        with replay.ReplayBuffer.open(run.replay) as buf:
            self.count = buf.count
            slots = buf.slots
        path = run.replay / "frames.f32"
        row = path.stat().st_size // (4 * slots)  # float32 per frame, simulator states included
        frames = np.memmap(path, dtype="<f4", mode="r", shape=(slots, row))
        self.rows = np.array(frames[: min(self.count, slots)])
        del frames
        try:
            text = run.greedy_csv.read_bytes()
        except FileNotFoundError:
            text = b""
        self.greedy = text[: text.rfind(b"\n") + 1]  # complete lines only
        self.updates = {}
        if run.progress_file.exists():
            progress = Progress(run.progress_file)
            self.updates = {role: progress.updates(role) for role in LEARNERS}


def _bad_greedy_lines(text: bytes) -> int:
    bad = 0
    for line in text.decode(errors="replace").splitlines():
        parts = line.split(",")
        try:
            ok = len(parts) == 4 and all(math.isfinite(float(p)) for p in parts)
            int(parts[1]), int(parts[2])
        except (ValueError, IndexError):
            ok = False
        bad += not ok
    return bad


def derived_config(config: Path, root: Path) -> Path:
    """`<root>/fault_<name>.json`: the config with a replay ring the loop never fills."""
    cfg = config_lib.load_config(config)
    updates = {"policy_config": {"replay_size": REPLAY_SIZE}}
    if config_lib.is_model_based(cfg):
        updates["model_config"] = {"replay_size": REPLAY_SIZE}
    path = root / f"fault_{config.stem}.json"
    path.write_text(json.dumps({"inherits": [str(config.resolve())], "updates": updates},
                               indent=2) + "\n")
    return path


def _start_master(config: Path, root: Path, seed: int, resume: bool, log: Path):
    argv = [sys.executable, str(PROJECT / "master.py"), str(config), "0", "--output-root",
            str(root), "--total-frames", str(BUDGET), "--seed", str(seed)]
    if resume:
        argv.append("--resume")
    with open(log, "ab") as out:
        return subprocess.Popen(argv, cwd=PROJECT, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _checkpoint_updates(run: RunDir, role: str) -> int:
    pointer = checkpoint.pointer_file(run.checkpoint_dir(role))
    try:
        return int(json.loads(pointer.read_text())["counters"]["updates"])
    except (OSError, ValueError, KeyError):
        return 0


def _live_updates(run: RunDir, role: str) -> int:
    try:
        return Progress(run.progress_file).updates(role)
    except (OSError, ValueError):
        return 0


def run_rounds(config: Path, rounds: int, root: Path, seed: int,
               kill_after: tuple[float, float], say=None,
               max_seconds: float | None = None, startup_share: float = 0.2) -> dict:
    """The loop (module docstring); returns the summary's numbers. On Ctrl-C or SIGTERM the
    current master gets SIGTERM (a clean stop) and the rounds done so far are returned."""
    say = say or (lambda text: print(text, flush=True))

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, interrupt)
    running: list[subprocess.Popen] = []
    totals = {"fault_rounds": 0, "lost_epochs_max": 0.0, "torn_rows": 0, "orphans": 0,
              "failed_rounds": 0}
    try:
        _rounds(config, rounds, root, seed, kill_after, say, max_seconds, startup_share,
                running, totals)
    except KeyboardInterrupt:
        for proc in running:
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        say("interrupted: the current master was stopped cleanly")
    finally:
        signal.signal(signal.SIGTERM, old_term)
    return totals


def _rounds(config, rounds, root, seed, kill_after, say, max_seconds, startup_share,
            running, totals) -> None:
    t0 = time.time()
    root.mkdir(parents=True, exist_ok=True)
    fault_config = derived_config(config, root)
    cfg = config_lib.load_config(fault_config)
    run = RunDir.for_config(cfg, config_lib.experiment_name(fault_config), seed, str(root))
    epoch_every = {"policy": cfg["policy_config"]["epoch_every_n"]}
    if config_lib.is_model_based(cfg):
        epoch_every["worldmodel"] = cfg["model_config"]["epoch_every_n"]
    rng = random.Random(seed)
    for k in range(1, rounds + 1):
        if max_seconds is not None and time.time() - t0 > max_seconds:
            say(f"--max-minutes reached: stopping after {k - 1} of {rounds} rounds")
            break
        problems: list[str] = []
        resumed_at = _checkpoint_updates(run, "policy")
        started = time.time()
        proc = _start_master(fault_config, root, seed, resume=k > 1 or run.path.exists(),
                             log=root / f"round{k}.log")
        running.append(proc)
        if k > 1 and rng.random() < startup_share:
            moment = "startup"  # any moment of the start-up: TensorFlow, restores, compiling
            wait = rng.uniform(0.0, kill_after[1])
        else:
            moment = "training"  # counted from the policy learner's first update of the round
            deadline = time.time() + START_SECONDS
            while not (_live_updates(run, "policy") > resumed_at
                       and checkpoint.pointer_file(run.checkpoint_dir("policy")).exists()):
                if proc.poll() is not None or time.time() > deadline:
                    break
                time.sleep(0.1)
            wait = time.time() - started + rng.uniform(*kill_after)
        while time.time() - started < wait and proc.poll() is None:
            time.sleep(0.05)
        if proc.poll() is not None:
            totals["fault_rounds"] += 1
            totals["failed_rounds"] += 1
            running.remove(proc)
            say(f"round {k}/{rounds}: master.py exited with status {proc.returncode} before the "
                f"kill; see {root / f'round{k}.log'}")
            continue
        running.remove(proc)
        family = process_descendants(proc.pid)
        named = _process_names(run, sorted(family))
        victims = [(proc.pid, "master")] + sorted(
            (pid, name) for pid, name in named.items()
            if "resource_tracker" not in process_cmdline(pid))
        victim, victim_name = rng.choice(victims)
        before = Snapshot(run)
        family |= {proc.pid} | process_descendants(proc.pid)
        kill_time = time.time()
        os.kill(victim, signal.SIGKILL)

        # Every process of the run must go: the master on its own, or its children by the
        # parent-death signal after their final checkpoints.
        while [p for p in family if process_alive(p)] and time.time() - kill_time < ORPHAN_SECONDS:
            proc.poll()
            time.sleep(0.1)
        proc.poll()
        orphans = [p for p in family if process_alive(p)]
        for p in orphans:
            os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait()
        exit_seconds = time.time() - kill_time
        if orphans:
            problems.append(f"{len(orphans)} orphan(s): {orphans}")

        after = Snapshot(run)
        torn = 0
        if after.count < before.count:
            problems.append(f"replay count went back from {before.count} to {after.count}")
        n = min(len(before.rows), len(after.rows))
        changed = int(np.sum(np.any(before.rows[:n] != after.rows[:n], axis=1)))
        changed += len(before.rows) - n
        not_finite = int(np.sum(~np.all(np.isfinite(after.rows), axis=1)))
        torn += changed + not_finite
        if changed or not_finite:
            problems.append(f"{changed} replay row(s) changed, {not_finite} not finite")
        if not after.greedy.startswith(before.greedy):
            common = os.path.commonprefix([before.greedy, after.greedy])
            lost_lines = before.greedy[len(common):].count(b"\n")
            torn += max(1, lost_lines)
            problems.append("greedy.csv lines from before the kill changed")
        bad = _bad_greedy_lines(after.greedy)
        torn += bad
        if bad:
            problems.append(f"{bad} unreadable greedy.csv line(s)")
        lost = {}
        for role, every in epoch_every.items():
            pointer = checkpoint.pointer_file(run.checkpoint_dir(role))
            saved = json.loads(pointer.read_text())["counters"]["updates"] \
                if pointer.exists() else 0
            lost[role] = max(0, before.updates.get(role, 0) - int(saved))
            epochs = lost[role] / every
            totals["lost_epochs_max"] = max(totals["lost_epochs_max"], epochs)
            if epochs > 1:
                problems.append(f"{role} lost {lost[role]} updates ({epochs:.2f} epochs)")
        totals["fault_rounds"] += 1
        totals["torn_rows"] += torn
        totals["orphans"] += len(orphans)
        totals["failed_rounds"] += bool(problems)
        lost_text = ", ".join(f"{role} {n_lost} ({n_lost / epoch_every[role]:.2f} epoch)"
                              for role, n_lost in lost.items())
        rows = [snap.greedy.count(b"\n") for snap in (before, after)]
        say(f"round {k}/{rounds}: killed {victim_name} (pid {victim}) at {kill_time - started:.1f}"
            f" s ({moment}) | frames {before.count} -> {after.count} | greedy rows "
            f"{rows[0]} -> {rows[1]} | lost updates "
            f"{lost_text} | all exited in {exit_seconds:.1f} s | "
            f"{'; '.join(problems) if problems else 'ok'}")


def summary_line(totals: dict) -> str:
    return (f"fault_rounds={totals['fault_rounds']} "
            f"lost_epochs_max={totals['lost_epochs_max']:.2f} torn_rows={totals['torn_rows']} "
            f"orphans={totals['orphans']} failed_rounds={totals['failed_rounds']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/fault_loop.py",
        description="Kill a random process of a small run at a random moment, resume, N times, "
                    "and check that nothing was lost or torn.")
    parser.add_argument("--config", default=str(PROJECT / "tests/configs/tiny_steve.json"),
                        help="the experiment config (default: tests/configs/tiny_steve.json)")
    parser.add_argument("--rounds", type=int, default=50, metavar="N")
    parser.add_argument("--output-root", default="/tmp/steve-fault-loop", metavar="DIR",
                        help="where the run goes (a fresh folder is best; default "
                             "/tmp/steve-fault-loop)")
    parser.add_argument("--kill-after", type=float, nargs=2, default=(2.0, 20.0),
                        metavar=("MIN", "MAX"),
                        help="the kill comes uniformly between MIN and MAX seconds after the "
                             "round's first policy update (default 2 20)")
    parser.add_argument("--startup-share", type=float, default=0.2, metavar="P",
                        help="share of the rounds killed during start-up instead (default 0.2)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the run and the loop's choices (victim, moment)")
    parser.add_argument("--max-minutes", type=float, default=None, metavar="M",
                        help="start no round after M minutes")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    if not 0 <= args.kill_after[0] <= args.kill_after[1]:
        parser.error("--kill-after needs 0 <= MIN <= MAX")
    config = Path(args.config)
    if not config.is_file():
        parser.error(f"config file {config} does not exist")
    root = Path(args.output_root).resolve()
    if root.exists() and not root.is_dir():
        parser.error(f"--output-root {root} is a file; give a folder")
    if PROJECT in (root, *root.parents):
        parser.error(f"--output-root {root} is inside the project; give a folder outside it "
                     f"(e.g. under /tmp)")
    t0 = time.time()
    totals = run_rounds(config, args.rounds, root, args.seed, tuple(args.kill_after),
                        max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
                        startup_share=args.startup_share)
    seconds = time.time() - t0
    print(f"{summary_line(totals)} ({seconds / 60:.1f} min, "
          f"{seconds / max(totals['fault_rounds'], 1):.0f} s per round)", flush=True)
    return 0 if totals["failed_rounds"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
