"""Run a list of benchmark runs one after another, each resumed where it stopped.

    .venv/bin/python bench/run_queue.py QUEUE_FILE --output-root DIR [--cpus 1] [--dry-run]
    .venv/bin/python bench/run_queue.py QUEUE_FILE [QUEUE_FILE ...] --output-root DIR --status

For long campaigns on a small machine (docs/benchmark/oracle_notes.md: two queues side by side,
two runs at a time, one core each). QUEUE_FILE holds one run per line, `CONFIG SEED FRAMES SUBDIR`
(`#` starts a comment), e.g.

    config/experiments/benchmark/oracle/hopper/steve_td3_oracle.json 0 60000 runs

For each line, in order, the run `DIR/SUBDIR/<ENV>/<EXPERIMENT>.seed<SEED>` is:
- skipped when its `state/finished.json` records a budget of FRAMES or more;
- resumed (`master.py --resume`) when its folder holds a checkpoint, started again
  (`--overwrite`) when its folder holds something else (it stopped in its start-up), else
  started, with `--seed SEED --total-frames FRAMES --cpus C --output-root DIR/SUBDIR` (the
  decision is the sweep's, `cluster.guard.run_state`);
- skipped when another process holds it (master.py refuses: "is in use by"), so two queues may
  list the same runs, one from each end: whichever reaches a run first takes it.
A run that fails is reported and the queue goes on. The same command again continues the queue
(finished runs are skipped, interrupted ones resumed); run it again after a machine restart.
Prints one line per run (start, end, exit status, minutes); writes nothing but what master.py
writes.

`--status` runs nothing and changes nothing: one line per run of the queue files (a run listed
in two queues once) saying whether it is finished, live (a process on this machine holds its
lock), stopped part-way (it resumes) or waiting, with its frames and hours, and the core-hours
left: each unfinished run's frames to go times the hours per frame of the finished runs of its
config, or of any config file that resolves to the same config, whatever their budgets (a run
whose config has none finished gets no estimate, and the total says how many).
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import util  # noqa: E402

LIVE_ELSEWHERE = "is in use by"


class QueueError(Exception):
    """A queue file that cannot be read; the message names the line and the fix."""


class Entry(NamedTuple):
    config: str
    seed: int
    frames: int
    subdir: str


def read_queue(path: Path) -> list[Entry]:
    """The runs of a queue file, in order (QueueError on a bad line)."""
    entries = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 4 or not fields[1].isdigit() or not fields[2].isdigit():
            raise QueueError(f"line {number} of {path} is {raw.strip()!r}, not 'CONFIG SEED "
                             f"FRAMES SUBDIR' (seed and frames whole numbers); fix that line.")
        config = fields[0]
        if not (ROOT / config).is_file():
            raise QueueError(f"line {number} of {path} names {config}, which does not exist "
                             f"under {ROOT}; fix the path.")
        entries.append(Entry(config, int(fields[1]), int(fields[2]), fields[3]))
    return entries


def master_argv(entry: Entry, output_root: Path, cpus: int, resume: bool) -> list[str]:
    argv = [sys.executable, str(ROOT / "master.py"), str(ROOT / entry.config), "0",
            "--seed", str(entry.seed), "--total-frames", str(entry.frames),
            "--cpus", str(cpus), "--output-root", str(output_root / entry.subdir)]
    return argv + (["--resume"] if resume else [])


def run_dir(entry: Entry, output_root: Path):
    """The run as master.py lays it out: <root>/<SUBDIR>/<ENV>/<EXPERIMENT>.seed<SEED>, ENV from
    the config (runs of one config name on two tasks are two folders)."""
    import config as config_lib
    from process.rundir import RunDir

    return RunDir.for_config(config_lib.load_config(ROOT / entry.config),
                             Path(entry.config).stem, entry.seed,
                             str(output_root / entry.subdir))


def mode(entry: Entry, output_root: Path) -> str:
    """How the run would start now, as the sweep decides it (`cluster.guard.run_state`): DONE
    when its state/finished.json records a budget of at least the entry's frames, RESUME when a
    learner has saved a checkpoint, RESTART when its folder holds anything else (it stopped in
    its start-up, and master.py refuses to resume it), NEW otherwise."""
    from cluster.guard import run_state

    return run_state(run_dir(entry, output_root), entry.frames)


def command(entry: Entry, output_root: Path, cpus: int, how: str) -> tuple[list[str], str]:
    """(master.py's command line for the entry, 'starting', 'resuming' or 'starting again'),
    given how the run starts (`mode`; not DONE)."""
    from cluster.guard import RESTART, RESUME

    argv = master_argv(entry, output_root, cpus, resume=how == RESUME)
    if how == RESTART:
        return argv + ["--overwrite"], "starting again"
    return argv, "resuming" if how == RESUME else "starting"


def run_entry(entry: Entry, output_root: Path, cpus: int, say=None) -> str:
    """Run (or resume, or skip) one entry; returns 'finished', 'skipped', 'elsewhere' or
    'failed'."""
    say = say or (lambda text: print(text, flush=True))
    from cluster.guard import DONE

    label = f"{entry.config} seed {entry.seed}"
    how = mode(entry, output_root)
    if how == DONE:
        say(f"{label}: finished before, skipped")
        return "skipped"
    argv, doing = command(entry, output_root, cpus, how)
    start = time.time()
    say(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {label}: {doing}")
    log = output_root / entry.subdir / "queue_logs" / f"{Path(entry.config).parent.name}_" \
        f"{Path(entry.config).stem}.seed{entry.seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        out.write(proc.stderr)
    minutes = (time.time() - start) / 60
    if proc.returncode == 2 and LIVE_ELSEWHERE in proc.stderr:
        say(f"{label}: live in another process, skipped")
        return "elsewhere"
    status = "finished" if proc.returncode == 0 else "failed"
    say(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {label}: {status} (exit {proc.returncode}, "
        f"{minutes:.1f} min; log {log})")
    return status


class Status(NamedTuple):
    entry: Entry
    state: str  # "finished", "live", "stopped" or "waiting"
    frames: int  # frames collected so far
    hours: float  # hours the run has run so far


def entry_status(entry: Entry, output_root: Path) -> Status:
    """Where one run stands, read from its folder without touching it (no lock is taken: a
    live run is one whose lock file a process on this machine holds open)."""
    import sweep
    from cluster.guard import DONE, run_state
    from process import preflight, rundir

    run = run_dir(entry, output_root)
    if not run.path.is_dir():
        return Status(entry, "waiting", 0, 0.0)
    hours = preflight.hours_so_far(run)
    if run_state(run, entry.frames) == DONE:
        frames = int(util.read_json(run.finished_file).get("frames", entry.frames))
        return Status(entry, "finished", frames, hours)
    live = run.lock_file.exists() and bool(rundir.processes_holding(run.lock_file))
    frames = sweep.run_progress(run)["frames"]
    return Status(entry, "live" if live else "stopped", frames, hours)


@functools.cache
def resolved(config: str) -> str:
    """The config file's resolved config, as text: two files that resolve alike (e.g.
    oracle/<task>/td3_matched.json and the oracle_tuning/<task>/td3_x<m>.json it copies) run
    alike."""
    import config as config_lib

    return json.dumps(config_lib.load_config(ROOT / config), sort_keys=True)


def hours_per_frame(statuses: list[Status]) -> dict[str, float]:
    """Per resolved config (see resolved): the finished runs' hours over their frames."""
    done: dict[str, list[float]] = {}
    for s in statuses:
        if s.state == "finished" and s.frames > 0:
            sums = done.setdefault(resolved(s.entry.config), [0.0, 0.0])
            sums[0] += s.hours
            sums[1] += s.frames
    return {key: hours / frames for key, (hours, frames) in done.items() if hours > 0}


def status_lines(entries: list[Entry], output_root: Path) -> list[str]:
    """The `--status` report: a line per run (each run once), then the totals."""
    unique = list(dict.fromkeys(entries))
    statuses = [entry_status(e, output_root) for e in unique]
    rates = hours_per_frame(statuses)
    lines, left, unknown = [], 0.0, 0
    counts = dict.fromkeys(("finished", "live", "stopped", "waiting"), 0)
    for s in statuses:
        counts[s.state] += 1
        label = f"{s.entry.config} seed {s.entry.seed}"
        budget = util.format_count(s.entry.frames)
        if s.state == "finished":
            lines.append(f"{s.state:9} {label}: {util.format_count(s.frames)} frames in "
                         f"{s.hours:.1f} h")
            continue
        rate = rates.get(resolved(s.entry.config))
        to_go = max(0, s.entry.frames - s.frames)
        if rate is None:
            unknown += 1
            estimate = "no estimate (no finished run of this config)"
        else:
            left += to_go * rate
            estimate = f"about {to_go * rate:.1f} h left"
        done = "" if s.state == "waiting" else (
            f"{util.format_count(s.frames)} of {budget} frames, {s.hours:.1f} h so far, ")
        lines.append(f"{s.state:9} {label}: {done}{estimate}")
    summary = ", ".join(f"{n} {state}" for state, n in counts.items())
    tail = f" ({unknown} run(s) without an estimate not counted)" if unknown else ""
    lines.append(f"{len(unique)} runs: {summary}; about {left:.1f} core-hours left{tail}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("queue", type=Path, nargs="+",
                        help="the queue file (CONFIG SEED FRAMES SUBDIR); several only with "
                             "--status or --dry-run")
    parser.add_argument("--output-root", type=Path, required=True,
                        help="base folder of the runs (outside the repository)")
    parser.add_argument("--cpus", type=int, default=1, help="master.py --cpus (default 1)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the master.py command of each run to come (a finished run is "
                             "named instead) and run nothing")
    parser.add_argument("--status", action="store_true",
                        help="say where each run stands and the core-hours left; run nothing")
    args = parser.parse_args(argv)
    if len(args.queue) > 1 and not (args.status or args.dry_run):
        print(f"error: {len(args.queue)} queue files given; run one queue at a time (start a "
              f"second queue beside it), or add --status or --dry-run.", file=sys.stderr)
        return 2
    try:
        entries = [e for queue in args.queue for e in read_queue(queue)]
    except (OSError, QueueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.status:
        for line in status_lines(entries, args.output_root):
            print(line)
        return 0
    if args.dry_run:
        from cluster.guard import DONE

        for entry in entries:
            how = mode(entry, args.output_root)
            if how == DONE:
                print(f"# {entry.config} seed {entry.seed}: finished before, would be skipped")
            else:
                print(" ".join(command(entry, args.output_root, args.cpus, how)[0]))
        return 0
    outcomes = [run_entry(entry, args.output_root, args.cpus) for entry in entries]
    failed = outcomes.count("failed")
    print(f"queue {args.queue[0]}: {len(entries)} runs, {outcomes.count('finished')} finished now, "
          f"{outcomes.count('skipped')} finished before, {outcomes.count('elsewhere')} live "
          f"elsewhere, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
