"""bench/run_queue.py: the queue file is read strictly, finished runs are skipped, folders with a
checkpoint resume, folders without one start again.

No run is started here (a run through master.py is what the tests of master.py cover)."""

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

import config as config_lib
import valuerl
from cluster.guard import NEW
from process import checkpoint

ROOT = Path(__file__).resolve().parents[1]
# Loaded by path: bench/ is not a package.
_spec = importlib.util.spec_from_file_location("run_queue", ROOT / "bench/run_queue.py")
bench_queue = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_queue)

CONFIG = "config/experiments/benchmark/oracle/hopper/steve_td3_oracle.json"


def test_the_committed_queues_read(tmp_path):
    for name in ("oracle_a.txt", "oracle_b.txt"):
        entries = bench_queue.read_queue(ROOT / "bench/queues" / name)
        assert entries and all((ROOT / e.config).is_file() for e in entries)
    a = bench_queue.read_queue(ROOT / "bench/queues/oracle_a.txt")
    assert {(e.config, e.seed) for e in a} == {
        (f"config/experiments/benchmark/oracle/{env}/steve_td3_oracle.json", seed)
        for env in ("hopper", "halfcheetah") for seed in range(5)}


def test_a_bad_line_is_named(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text(f"# comment\n{CONFIG} 0 60000 runs\n{CONFIG} zero 60000 runs\n")
    with pytest.raises(bench_queue.QueueError, match="line 3 of .* not 'CONFIG SEED FRAMES"):
        bench_queue.read_queue(path)
    path.write_text("config/nope.json 0 100 runs\n")
    with pytest.raises(bench_queue.QueueError, match="names config/nope.json, which does not"):
        bench_queue.read_queue(path)


def test_finished_runs_are_skipped_and_started_ones_resume(tmp_path, monkeypatch):
    entry = bench_queue.Entry(CONFIG, 3, 60000, "runs")
    argv = bench_queue.master_argv(entry, tmp_path, 1, resume=False)
    assert argv[-8:] == ["--seed", "3", "--total-frames", "60000", "--cpus", "1",
                         "--output-root", str(tmp_path / "runs")]
    folder = tmp_path / "runs/Hopper-v5/steve_td3_oracle.seed3"
    # The same config name and seed on another task is another run, not this one.
    other = tmp_path / "runs/HalfCheetah-v5/steve_td3_oracle.seed3"
    (other / "state").mkdir(parents=True)
    (other / "state/finished.json").write_text('{"total_frames": 60000}')
    assert bench_queue.run_dir(entry, tmp_path).path == folder
    assert bench_queue.mode(entry, tmp_path) == NEW
    assert bench_queue.command(entry, tmp_path, 1, NEW) == (argv, "starting")
    assert bench_queue.master_argv(entry, tmp_path, 1, resume=True)[-1] == "--resume"
    # a run stopped in its start-up has no checkpoint: it starts again instead of resuming
    (folder / "checkpoints/policy").mkdir(parents=True)
    ran = []
    monkeypatch.setattr(bench_queue.subprocess, "run", lambda argv, **kw: ran.append(argv)
                        or subprocess.CompletedProcess(argv, 0, "", ""))
    said = []
    assert bench_queue.run_entry(entry, tmp_path, 1, say=said.append) == "finished"
    assert ran[-1][-1] == "--overwrite" and "--resume" not in ran[-1]
    assert said[0].endswith(f"{CONFIG} seed 3: starting again")
    tiny = config_lib.load_config(ROOT / "tests/configs/tiny_ddpg.json")
    agent = valuerl.ValueRL(tiny, seed=0, jit_compile=False)
    checkpoint.save_checkpoint(str(folder / "checkpoints/policy"), {"valuerl": agent}, {})
    assert bench_queue.run_entry(entry, tmp_path, 1, say=said.append) == "finished"
    assert ran[-1][-1] == "--resume" and said[-2].endswith(f"{CONFIG} seed 3: resuming")
    # finished with a smaller budget than the entry's: it goes on
    (folder / "state").mkdir()
    (folder / "state/finished.json").write_text('{"total_frames": 30000}')
    assert bench_queue.run_entry(entry, tmp_path, 1, say=said.append) == "finished"
    assert ran[-1][-1] == "--resume" and said[-2].endswith(f"{CONFIG} seed 3: resuming")
    (folder / "state/finished.json").write_text('{"total_frames": 60000}')
    said = []
    assert bench_queue.run_entry(entry, tmp_path, 1, say=said.append) == "skipped"
    assert said == [f"{CONFIG} seed 3: finished before, skipped"]


def test_status_says_where_each_run_stands_and_the_hours_left(tmp_path, capsys):
    """--status reads the run folders (a finished, a stopped, a live and two waiting runs)
    without touching them, lists a run named by two queues once, and estimates the hours left
    from the finished runs of the same resolved config."""
    same = tmp_path / "same.json"  # another file resolving to CONFIG's config
    same.write_text(json.dumps({"inherits": [str(ROOT / CONFIG)]}))
    tiny = "tests/configs/tiny_ddpg.json"
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text(f"{CONFIG} 0 60000 runs\n{CONFIG} 1 60000 runs\n{CONFIG} 2 60000 runs\n")
    second.write_text(f"{CONFIG} 2 60000 runs\n{same} 3 60000 runs\n{tiny} 0 300 runs\n")
    out = tmp_path / "out"
    runs = out / "runs/Hopper-v5"
    # seed 0 finished: 60k frames in 4 hours (the hours of its last evaluation row)
    (runs / "steve_td3_oracle.seed0/state").mkdir(parents=True)
    (runs / "steve_td3_oracle.seed0/state/finished.json").write_text(
        '{"frames": 60000, "total_frames": 60000}')
    (runs / "steve_td3_oracle.seed0/log").mkdir()
    (runs / "steve_td3_oracle.seed0/log/steve_td3_oracle.seed0.greedy.csv").write_text(
        "1.5,10,20000,50.0\n4.0,30,60000,90.0\n")
    # seed 1 stopped: its checkpoint is at 15k frames, 1 hour in
    stopped = runs / "steve_td3_oracle.seed1"
    agent = valuerl.ValueRL(config_lib.load_config(ROOT / tiny), seed=0, jit_compile=False)
    checkpoint.save_checkpoint(str(stopped / "checkpoints/policy"), {"valuerl": agent},
                               {"frames": 15000, "hours": 1.0})
    # seed 2 live: a process (this one) holds its lock file open
    live = runs / "steve_td3_oracle.seed2/state/owner.lock"
    live.parent.mkdir(parents=True)
    live.write_text('{"pid": 1}\n')
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with open(live):
        assert bench_queue.main([str(first), str(second), "--output-root", str(out),
                                 "--status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing touched
    assert lines == [
        f"finished  {CONFIG} seed 0: 60.0k frames in 4.0 h",
        f"stopped   {CONFIG} seed 1: 15.0k of 60.0k frames, 1.0 h so far, about 3.0 h left",
        f"live      {CONFIG} seed 2: 0 of 60.0k frames, 0.0 h so far, about 4.0 h left",
        f"waiting   {same} seed 3: about 4.0 h left",
        f"waiting   {tiny} seed 0: no estimate (no finished run of this config)",
        "5 runs: 1 finished, 1 live, 1 stopped, 2 waiting; about 11.0 core-hours left "
        "(1 run(s) without an estimate not counted)"]
    # the live run is live only while a process holds its lock
    assert bench_queue.entry_status(bench_queue.Entry(CONFIG, 2, 60000, "runs"),
                                    out).state == "stopped"


def test_several_queues_only_for_status_or_dry_run_and_what_a_dry_run_prints(tmp_path, capsys):
    queue = tmp_path / "q.txt"
    queue.write_text(f"{CONFIG} 0 60000 runs\n")
    assert bench_queue.main([str(queue), str(queue), "--output-root", str(tmp_path)]) == 2
    assert "2 queue files given; run one queue at a time" in capsys.readouterr().err
    assert not any(tmp_path.rglob("*.seed0"))
    # --dry-run prints the command of a run to come and names a finished run instead
    (tmp_path / "runs/Hopper-v5/steve_td3_oracle.seed0/state").mkdir(parents=True)
    (tmp_path / "runs/Hopper-v5/steve_td3_oracle.seed0/state/finished.json").write_text(
        '{"total_frames": 60000}')
    queue.write_text(f"{CONFIG} 0 60000 runs\n{CONFIG} 1 60000 runs\n")
    assert bench_queue.main([str(queue), "--output-root", str(tmp_path), "--dry-run"]) == 0
    [done, to_come] = capsys.readouterr().out.splitlines()
    assert done == f"# {CONFIG} seed 0: finished before, would be skipped"
    assert to_come.endswith(f"--seed 1 --total-frames 60000 --cpus 1 --output-root "
                            f"{tmp_path / 'runs'}")
