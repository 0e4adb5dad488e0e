"""bench/fault_loop.py on the tiny DDPG config: 2 rounds of SIGKILL of a random process of the
run; one round each of SIGSTOP of a child and of a cut newest checkpoint; one round of a full
disk on a tmpfs the loop mounts (skipped where mounting is not allowed). Each round resumes and
checks. (The 40-round figure in docs/reliability.md is a benchmark, not a test.)"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = "InvertedPendulum-v5/fault_tiny_ddpg.seed1"


def fault_loop(tmp_path, rounds, faults, kill_after=("3", "10"), timeout=500):
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench/fault_loop.py"), "--rounds", str(rounds), "--config",
         str(ROOT / "tests/configs/tiny_ddpg.json"), "--faults", faults, "--kill-after",
         *kill_after, "--output-root", str(tmp_path / "loop"), "--seed", "1"],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    rounds_run = [ln for ln in lines if ln.startswith("round ")]
    assert len(rounds_run) == rounds and all(ln.endswith("| ok") for ln in rounds_run), lines
    summary = re.match(rf"fault_rounds={rounds} lost_epochs_max=([\d.]+) torn_rows=0 orphans=0 "
                       r"failed_rounds=0 ", lines[-1])
    assert summary, lines[-1]
    return lines, rounds_run, float(summary.group(1))


@pytest.mark.slow
def test_fault_loop_kill_rounds(tmp_path):
    lines, rounds, lost = fault_loop(tmp_path, 2, "kill=1")
    assert lost <= 1.0
    assert re.search(r"killed (master|policy-learner|interactor-0|evaluator-0) \(pid \d+\)",
                     rounds[0])
    assert "fault=kill rounds=2 passed=2 failed=0 skipped=0 " in lines[-2]
    # Round 2 was a resume that master.py accepted (it exited early otherwise).
    run = tmp_path / "loop" / RUN
    assert (run / "checkpoints/policy/latest.json").is_file()
    assert all((tmp_path / f"loop/round{k}.log").is_file() for k in (1, 2))


@pytest.mark.slow
def test_fault_loop_stop_and_truncate(tmp_path):
    """A stopped child is named by the master (status 3) and the next round resumes; a cut
    newest checkpoint is passed over for the one before it, which the learner's log says."""
    lines, rounds, lost = fault_loop(tmp_path, 2, "stop=1,truncate=1", kill_after=("1", "3"))
    assert lost <= 2.0
    stop = next(ln for ln in rounds if "stopped" in ln)
    assert re.search(r"stopped (policy-learner|interactor-0|evaluator-0) \(pid \d+\) .*status 3 "
                     r"after [\d.]+ s", stop), stop
    cut = next(ln for ln in rounds if "cut" in ln)
    found = re.search(r"cut policy's (ckpt-\d+) \(resumed from (ckpt-\d+)\)", cut)
    assert found and found.group(1) != found.group(2), cut
    log = (tmp_path / "loop" / RUN / "log/valuerl.log").read_text()
    assert re.search(rf"resumed from \S+/{found.group(2)}, not from the newer \S+/"
                     rf"{found.group(1)} \(.+\), which cannot be read", log), log[-2000:]
    assert "fault=stop rounds=1 passed=1 failed=0 skipped=0 " in lines[-3]
    assert "fault=truncate rounds=1 passed=1 failed=0 skipped=0 " in lines[-2]


def _can_mount(folder: Path) -> str:
    """"" when a tmpfs can be mounted here (it is unmounted again), else why not."""
    folder.mkdir()
    try:
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "probe", str(folder)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if out.returncode != 0:
        return out.stderr.strip() or f"mount exited {out.returncode}"
    subprocess.run(["umount", str(folder)], check=True, timeout=30)
    return ""


@pytest.mark.slow
def test_fault_loop_full_disk(tmp_path):
    """On a tmpfs the loop mounts: a full disk stops the run with status 2 and one sentence
    naming the disk; after the filler is deleted, --resume continues and the checks pass."""
    why = _can_mount(tmp_path / "probe")
    if why:
        pytest.skip(f"a full disk needs a tmpfs, and mounting one is not allowed here: {why}")
    lines, rounds, lost = fault_loop(tmp_path, 1, "disk=1", kill_after=("1", "3"))
    assert lost <= 1.0
    assert re.search(r"filled the disk \(\d+ MB\) at [\d.]+ s \(status 2 after [\d.]+ s\), "
                     r"resumed", rounds[0]), rounds[0]
    assert "fault=disk rounds=1 passed=1 failed=0 skipped=0 " in lines[-2]
    console = (tmp_path / "loop/round1.log").read_text()
    disk = tmp_path / "loop/disk"
    assert re.search(rf"^error: the disk holding {re.escape(str(disk))}/\S+ is full \(.*; free "
                     rf"space on {re.escape(str(disk))} or move the run; then --resume\.$",
                     console, re.M), console[-2000:]
    # The loop unmounted its tmpfs, keeping the run's logs.
    assert str(disk) not in Path("/proc/mounts").read_text()
    assert "resumed from" in (tmp_path / "loop/run-log/valuerl.log").read_text()
