"""bench/fault_loop.py for 3 rounds on the tiny DDPG config: SIGKILL a random process of the run,
resume, check. (The 50-round figure in docs/reliability.md is a benchmark, not a test.)"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_fault_loop_three_rounds(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench/fault_loop.py"), "--rounds", "3", "--config",
         str(ROOT / "tests/configs/tiny_ddpg.json"), "--kill-after", "3", "10",
         "--output-root", str(tmp_path / "loop"), "--seed", "1"],
        capture_output=True, text=True, timeout=500, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    rounds = [ln for ln in lines if ln.startswith("round ")]
    assert len(rounds) == 3 and all(ln.endswith("| ok") for ln in rounds), lines
    assert re.search(r"killed (master|policy-learner|interactor-0|evaluator-0) \(pid \d+\)",
                     rounds[0])
    summary = re.match(r"fault_rounds=3 lost_epochs_max=([\d.]+) torn_rows=0 orphans=0 "
                       r"failed_rounds=0 ", lines[-1])
    assert summary and float(summary.group(1)) <= 1.0, lines[-1]
    # Rounds 2 and 3 were resumes that master.py accepted (it exited early otherwise).
    run = tmp_path / "loop/InvertedPendulum-v5/fault_tiny_ddpg.seed1"
    assert (run / "checkpoints/policy/latest.json").is_file()
    assert all((tmp_path / f"loop/round{k}.log").is_file() for k in (1, 2, 3))
