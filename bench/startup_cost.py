"""What a child process's TensorFlow import costs, with and without the Keras import it brings.

Run: `.venv/bin/python bench/startup_cost.py [--rounds 5]`. Writes nothing.

Every process of a run (learners, interactors, evaluators, the visualizer) starts by importing
TensorFlow. TensorFlow 2.16 and later then imports Keras 3 of its own (and matplotlib with it),
which nothing here uses; process/runtime.py's `import_tensorflow` leaves that out. This script
starts fresh Python processes, alternately, doing what an interactor does before its first
step:
- `plain`: `import tensorflow`, then the project's modules and a TensorBoard writer;
- `runtime`: `runtime.import_tensorflow()`, then the same.
The machine is shared, so CPU time (user + system, from the kernel's accounting of each process)
is compared, not wall time; the median of `--rounds` processes of each is printed with each
process's peak memory (max RSS), and the saving per process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

REST = ("import nn, valuerl, envwrap; "
        "tf.summary.create_file_writer(sys.argv[1]).flush(); "
        "print('keras' in sys.modules)")
VARIANTS = {
    "plain": "import sys; import tensorflow as tf; " + REST,
    "runtime": "import sys; from process import runtime; tf = runtime.import_tensorflow(); " + REST,
}


def measure(code: str, scratch: str) -> tuple[float, float, bool]:
    """CPU seconds, peak memory (MB) and whether Keras was imported, of one fresh process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.Popen([sys.executable, "-c", code, scratch], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    with proc.stdout:
        out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # the process's own rusage, not all children's
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"error: the {code!r} process failed (exit {proc.returncode})")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.strip() == "True"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="processes of each variant")
    args = p.parse_args(argv)
    results: dict[str, list[tuple[float, float, bool]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(args.rounds):
            for name, code in VARIANTS.items():
                results[name].append(measure(code, scratch))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{name} {rows[-1][0]:.2f} s" for name, rows in results.items()), flush=True)
    print("\n| variant | CPU s (median) | max RSS MB (median) | Keras imported |")
    print("|---|---|---|---|")
    medians = {}
    for name, rows in results.items():
        cpu = statistics.median(row[0] for row in rows)
        rss = statistics.median(row[1] for row in rows)
        medians[name] = (cpu, rss)
        print(f"| {name} | {cpu:.2f} | {rss:.0f} | {'yes' if all(r[2] for r in rows) else 'no'} |")
    (cpu0, rss0), (cpu1, rss1) = medians["plain"], medians["runtime"]
    print(f"\nsaved per process: {cpu0 - cpu1:.2f} s of CPU ({(cpu0 - cpu1) / cpu0:.0%}), "
          f"{rss0 - rss1:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
