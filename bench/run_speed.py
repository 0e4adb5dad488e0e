"""End-to-end speed: what one environment frame of a whole run costs, STEVE against DDPG.

    .venv/bin/python bench/run_speed.py [--frames N] [--configs A.json B.json ...]
                                        [--output-root DIR] [--seed S] [--keep]

With no arguments it runs the CPU preset's DDPG and STEVE configs on Hopper-v5
(`config/experiments/benchmark/cpu/hopper/{ddpg,steve}.json`) through the real `master.py`,
one after the other on the same machine, each for `--frames` frames (default 8,000, i.e. 6,000
after learning starts; about 5 minutes in all on 2 quiet cores). While a run goes, the replay
buffer's frame count is read every 0.2 s from outside the run. Printed per run:
- `wall`: seconds from starting master.py until it exited (Python and TensorFlow start-up,
  random warm-up, world-model pretraining, compiling, learning, final checkpoints);
- `learning s/frame`: seconds per frame from the moment the buffer passed
  `frames_before_learning` to the moment it reached the budget (pretraining and compiling
  included: what learning costs from its first update);
- `steady s/frame`: the same over the second half of the learning frames (compiling done:
  what the tens of thousands of frames of a real run cost each).
The last lines are `steve_frame_cost_ratio_learning=` and `steve_frame_cost_ratio=<STEVE steady
s/frame / DDPG steady s/frame>` (with other configs: the last config against the first). Runs go
to a temporary folder that is deleted afterwards unless `--keep` or `--output-root` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from process.rundir import RunDir  # noqa: E402
from replay import ReplayBuffer  # noqa: E402

DEFAULT_CONFIGS = [
    "config/experiments/benchmark/cpu/hopper/ddpg.json",
    "config/experiments/benchmark/cpu/hopper/steve.json",
]
POLL_SECONDS = 0.2


def resolved_config(path: str) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "master.py"), path, "0", "--print-config"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout)


def time_run(config_path: str, frames: int, output_root: Path, seed: int,
             cpus: int | None = None, tag: str = "") -> dict:
    """Run master.py on `config_path` to `frames` frames; return its timings."""
    config = resolved_config(config_path)
    experiment = Path(config_path).stem
    output_root = output_root / tag if tag else output_root
    run = RunDir.for_config(config, experiment, seed, str(output_root))
    start_learning = int(config["policy_config"]["frames_before_learning"])
    if frames <= start_learning + 100:
        raise SystemExit(f"--frames {frames} leaves no learning phase for {config_path} "
                         f"(frames_before_learning is {start_learning}); give more frames.")
    half = start_learning + (frames - start_learning) // 2
    output_root.mkdir(parents=True, exist_ok=True)
    log_path = output_root / f"{experiment}.master.out"
    command = [sys.executable, str(ROOT / "master.py"), config_path, "0", "--total-frames",
               str(frames), "--output-root", str(output_root), "--seed", str(seed)]
    if cpus is not None:
        command += ["--cpus", str(cpus)]
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        replay = None
        while proc.poll() is None:
            time.sleep(POLL_SECONDS)
            if replay is None:
                if not ReplayBuffer.exists(run.replay):
                    continue
                replay = ReplayBuffer.open(run.replay, sync=False)
            count = replay.count
            now = time.perf_counter() - t0
            for name, mark in (("learning", start_learning), ("half", half), ("end", frames)):
                if count >= mark and name not in marks:
                    marks[name] = now
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log_path.read_text().splitlines()[-15:]
        raise SystemExit(f"{config_path} failed (exit {proc.returncode}); the end of its "
                         f"output:\n" + "\n".join(tail))
    marks.setdefault("end", wall)
    return {
        "config": config_path,
        "wall": wall,
        "learning": (marks["end"] - marks["learning"]) / (frames - start_learning),
        "steady": (marks["end"] - marks["half"]) / (frames - half),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8000, help="frames per run")
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS,
                        help="configs to time, in order; the ratio is last over first")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the configs this many times, alternating, and keep each "
                             "config's fastest run (the machine is shared)")
    parser.add_argument("--cpus", type=int, default=None, help="passed to master.py --cpus")
    parser.add_argument("--output-root", default=None, help="keep the runs here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary run folder")
    args = parser.parse_args()
    root = Path(args.output_root or tempfile.mkdtemp(prefix="run_speed_"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"runs in {root}; {args.frames} frames each, one after the other"
          + (f", {args.repeats} rounds" if args.repeats > 1 else ""), flush=True)
    best: dict[str, dict] = {}
    try:
        for round_ in range(args.repeats):
            for path in args.configs:
                tag = f"round{round_}" if args.repeats > 1 else ""
                result = time_run(path, args.frames, root, args.seed, args.cpus, tag)
                print(f"{Path(path).stem:12s} wall {result['wall']:7.1f} s | learning "
                      f"{result['learning'] * 1e3:7.2f} ms/frame | steady "
                      f"{result['steady'] * 1e3:7.2f} ms/frame "
                      f"({1 / result['steady']:6.1f} frames/s)", flush=True)
                if path not in best or result["steady"] < best[path]["steady"]:
                    best[path] = result
    finally:
        if args.output_root is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    first, last = best[args.configs[0]], best[args.configs[-1]]
    name = "steve" if args.configs == DEFAULT_CONFIGS else Path(last["config"]).stem
    print(f"{name}_frame_cost_ratio_learning={last['learning'] / first['learning']:.2f}")
    print(f"{name}_frame_cost_ratio={last['steady'] / first['steady']:.2f}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
