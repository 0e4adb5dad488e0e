"""bench/sample_efficiency.py and the report it writes (reports/scores.py, reports/markdown.py,
reports/report.py): the report's numbers on fake runs, the command line, and the whole machinery
(sweep on a local Ray cluster, an interrupted run resumed, report and figures) on a tiny budget.

The fast tests write fake run folders (log/hps.json, log/<run>.greedy.csv, state/finished.json)
under tmp_path and need no Ray. The end-to-end test takes conftest.py's `cluster`, the two-node
Ray cluster on 127.0.0.1 (one CPU per node, `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`) that
tests/test_sweep.py uses too, stopped through its handle at the end of the module.
"""

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import config as config_lib
import sweep
from reports import aggregate, markdown, reference, scores
from reports.benchmark import Benchmark, BenchmarkError
from reports.report import write_report

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TINY_DDPG = TESTS / "configs/tiny_ddpg.json"
TINY_STEVE = TESTS / "configs/tiny_steve.json"
ENV = "InvertedPendulum-v5"


def _load_module():
    spec = importlib.util.spec_from_file_location("sample_efficiency",
                                                  ROOT / "bench/sample_efficiency.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


se = _load_module()


def write(bench, **kwargs):
    """write_report with the benchmark driver's learning curves (plot.py)."""
    return write_report(bench, se.draw_curves, **kwargs)


def greedy(rows) -> np.ndarray:
    """plot.load_greedy's layout from (frames, score) pairs; hours = frames / 36000."""
    return np.array([[f / 36000, i, f, s] for i, (f, s) in enumerate(rows)], dtype=np.float64)


def fake_run(root: Path, experiment: str, seed: int, rows, finished_at: int | None,
             env: str = ENV) -> Path:
    run = root / env / f"{experiment}.seed{seed}"
    (run / "log").mkdir(parents=True)
    (run / "log/hps.json").write_text(json.dumps({"env": {"name": env}, "seed": seed}))
    (run / "log" / f"{run.name}.greedy.csv").write_text(
        "".join(f"{h:.6f},{int(e)},{int(f)},{s:.6f}\n" for h, e, f, s in greedy(rows)))
    if finished_at is not None:
        (run / "state").mkdir()
        (run / "state/finished.json").write_text(json.dumps(
            {"total_frames": finished_at, "frames": finished_at}))
    return run


def tiny_bench(tmp_path: Path, **changes):
    out = tmp_path / "out"
    bench = Benchmark(name="tiny test", configs=(str(TINY_DDPG), str(TINY_STEVE)), seeds=2,
                         total_frames=1000, marks=(500, 1000),
                         thresholds={ENV: 100.0}, output_root=str(out),
                         report=str(tmp_path / "docs/report.md"), command="python bench/x")
    return dataclasses.replace(bench, **changes)


# ------------------------------------------------------------------------------ numbers


def test_score_at_averages_the_last_tenth_before_the_mark():
    data = greedy([(400, 1.0), (450, 3.0), (500, 5.0), (520, 100.0), (900, 7.0), (1000, 9.0)])
    assert reference.score_at(data, 500) == pytest.approx(5.0)  # only 500 lies in (450, 500]
    assert reference.score_at(data, 1000) == pytest.approx(9.0)  # (900, 1000]: 900 is left out
    assert reference.score_at(data, 999) == pytest.approx(7.0)  # (899.1, 999]
    assert reference.score_at(data, 800) is None  # nothing in (720, 800]
    assert reference.score_at(data, 2000) is None  # beyond the run
    assert reference.score_at(data, 500, window=0.25) == pytest.approx(3.0)  # (375, 500]
    # an unfinished run at 950 frames: (900, 1000] is not complete, so no score there yet
    assert reference.score_at(data, 1000, reached=950) is None
    assert reference.score_at(data, 1000, reached=1000) == pytest.approx(9.0)


def test_frames_to_threshold_uses_the_windowed_score():
    # A lone good episode at 500 is averaged with the bad one at 460: 4.5 < 8.
    data = greedy([(100, 0.0), (460, 0.0), (500, 9.0), (700, 8.0), (800, 8.0)])
    assert scores.frames_to_threshold(data, 8.0) == 700
    assert scores.frames_to_threshold(data, 4.5) == 500
    assert scores.frames_to_threshold(data, 0.0) == 100
    assert scores.frames_to_threshold(data, 9.5) is None


def test_mean_score_over_the_budget():
    data = greedy([(500, 10.0), (1000, 30.0)])
    assert scores.mean_score(data, 1000, points=2) == pytest.approx(20.0)  # at 500 and 1000
    assert scores.mean_score(data, 1000, points=4) == pytest.approx(20.0)  # 250, 750: no value
    # points=20: 500 and 550 ([495, 550]) see 10; 950 (none in [855, 950]); 1000 sees 30.
    assert scores.mean_score(data, 1000) == pytest.approx((10.0 + 10.0 + 30.0) / 3)
    assert scores.mean_score(greedy([(2000, 5.0)]), 1000) is None


def test_permutation_p_values():
    # 3 vs 3 fully separated: 2 of the C(6, 3) = 20 splits are as extreme.
    assert scores.permutation_p([4.0, 5.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx(0.1)
    assert scores.permutation_p([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    # 6 vs 6 separated: 2 / 924.
    assert scores.permutation_p(range(6, 12), range(6)) == pytest.approx(2 / 924)
    # Monte Carlo when the exact count is too large: close to the exact value.
    exact = scores.permutation_p([5.0, 1.0, 7.0, 9.0], [0.0, 2.0, 3.0, 4.0])
    approx = scores.permutation_p([5.0, 1.0, 7.0, 9.0], [0.0, 2.0, 3.0, 4.0], exact_limit=10)
    assert approx == pytest.approx(exact, abs=0.02)
    with pytest.raises(ValueError):
        scores.permutation_p([], [1.0])


def test_spread_and_cells():
    assert scores.spread([None, None]) is None
    s = scores.spread([1.0, 3.0, None])
    assert s == {"n": 2, "mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0}
    assert markdown._cell([100.0, 300.0]) == "200 ± 100 (100–300)"
    assert markdown._cell([1.0, 3.0, None]) == "2.0 ± 1.0 (1.0–3.0) [n=2]"
    assert markdown._cell([90.0, 110.0]) == "100 ± 10 (90–110)"  # one format per cell
    assert markdown._cell([None]) == "-"
    assert [markdown._frames(n) for n in (500, 7500, 17840, 1_250_000)] == ["500", "7.5k", "17.8k",
                                                                      "1.25M"]
    assert se.default_marks(30000) == (7500, 15000, 22500, 30000)


def test_report_from_fake_runs(tmp_path):
    bench = tiny_bench(tmp_path)
    out = Path(bench.output_root)
    # tiny_ddpg: seed 0 reaches 100 at 901 frames, seed 1 never; tiny_steve: at 500 and 460.
    # (A score at F averages the episodes that ended in (0.9 F, F].)
    fake_run(out, "tiny_ddpg", 0, [(451, 10.0), (500, 20.0), (901, 100.0), (1000, 120.0)], 1000)
    fake_run(out, "tiny_ddpg", 1, [(480, 30.0), (950, 50.0), (1000, 70.0)], 1000)
    fake_run(out, "tiny_steve", 0, [(500, 150.0), (1000, 200.0)], 1000)
    fake_run(out, "tiny_steve", 1, [(460, 110.0), (500, 130.0), (700, 90.0)], None)

    report, figures = write(bench, when="today")
    assert report == tmp_path / "docs/report.md"
    assert [f.name for f in figures] == ["report_curves_frames.png", "report_curves_hours.png"]
    assert all(f.stat().st_size > 10_000 for f in figures)
    text = report.read_text()
    lines = text.splitlines()
    assert lines[0] == "# Sample efficiency: tiny test"
    assert " on today from 4 run(s) of 2 config(s) x 2 seed(s)" in text
    assert "**1 run(s) have not reached the budget yet**" in text
    # scores at 500: ddpg (15, 30) -> 22.5 ± 7.5; steve (150, 120) -> 135 ± 15
    # scores at 1000: ddpg (110, 60) -> 85 ± 25; steve (200, none) -> n=1
    assert ("| InvertedPendulum-v5 | tiny_ddpg | 2 | 22.5 ± 7.5 (15.0–30.0) | "
            "85 ± 25 (60–110) |") in lines
    assert ("| InvertedPendulum-v5 | tiny_steve | 2 | 135 ± 15 (120–150) | "
            "200 ± 0 (200–200) [n=1] |") in lines
    assert "| InvertedPendulum-v5 | tiny_ddpg | 100 | 1/2 | 901 | 901, - |" in lines
    assert "| InvertedPendulum-v5 | tiny_steve | 100 | 2/2 | 480 | 500, 460 |" in lines
    # hours = last frames / 36000: ddpg 1000, 1000 -> 0.03; steve 1000, 700
    assert "| InvertedPendulum-v5 | tiny_steve | 0.02 ± 0.00 (0.02–0.03) | 700 |" in lines
    assert "## Mean score over the budget" in lines
    # tiny_steve seed 1 has not finished: no mean score over the budget, so the pair has 2 / 1
    # seeds; seed 0 scores above both tiny_ddpg runs: 1 of the C(3, 1) = 3 labellings.
    assert any(ln.startswith("| InvertedPendulum-v5 | tiny_steve | 2 | ") and ln.endswith(
        " [n=1] |") for ln in lines[lines.index("## Mean score over the budget"):]), text
    assert any(ln.startswith("| InvertedPendulum-v5 | tiny_ddpg | tiny_steve | -")
               and ln.endswith("| 0.333 | 2 / 1 |") for ln in lines), text
    assert "![greedy score against frames](report_curves_frames.png)" in lines
    assert "![greedy score against hours](report_curves_hours.png)" in lines
    assert any(ln.startswith("| InvertedPendulum-v5 | tiny_steve | 1 | unfinished | 700 | 3 |")
               for ln in lines), text
    assert not list(report.parent.glob(".*tmp"))  # written whole, no temporary left
    assert report.stat().st_mode & 0o644 == 0o644  # readable like any other file


def test_report_needs_evaluations_and_folders(tmp_path):
    bench = tiny_bench(tmp_path)
    out = Path(bench.output_root)
    with pytest.raises(BenchmarkError, match="4 run folder\\(s\\) do not exist.*without "
                                                "--report-only"):
        write(bench)
    for experiment in ("tiny_ddpg", "tiny_steve"):
        for seed in (0, 1):
            fake_run(out, experiment, seed, [(500, 1.0)], 1000)
    (out / ENV / "tiny_steve.seed1/log/tiny_steve.seed1.greedy.csv").write_text("")
    with pytest.raises(BenchmarkError, match="^Run .*tiny_steve.seed1 has no evaluations"):
        write(bench)
    assert not Path(bench.report).exists()


def test_partial_report_lists_pending_runs(tmp_path):
    bench = tiny_bench(tmp_path)
    out = Path(bench.output_root)
    with pytest.raises(BenchmarkError, match="None of the 4 run\\(s\\) has an evaluation"):
        write(bench, partial=True)
    fake_run(out, "tiny_ddpg", 0, [(500, 10.0), (1000, 30.0)], 1000)
    fake_run(out, "tiny_steve", 0, [(500, 150.0), (1000, 200.0)], 1000)
    fake_run(out, "tiny_steve", 1, [(500, 1.0)], None)
    (out / ENV / "tiny_steve.seed1/log/tiny_steve.seed1.greedy.csv").write_text("")  # started
    with pytest.raises(BenchmarkError, match="1 of the 4 run folder\\(s\\) do not exist"):
        write(bench)  # a full report still refuses
    report, _ = write(bench, when="today", partial=True)
    text = report.read_text()
    assert "from 2 run(s) of 2 config(s)" in text
    assert "**2 run(s) have not started or have no evaluation yet**" in text
    assert "tiny_ddpg.seed1`" in text and "tiny_steve.seed1`" in text
    assert "| InvertedPendulum-v5 | tiny_steve | 1 | 150 ± 0 (150–150) | 200 ± 0 (200–200) |" in (
        text.splitlines())
    summary = json.loads(report.with_suffix(".json").read_text())
    algos = summary["environments"][ENV]["algorithms"]
    assert list(algos["tiny_steve"]["seeds"]) == ["0"] and list(algos["tiny_ddpg"]["seeds"]) == [
        "0"]
    assert se.main(["tests/configs/tiny_ddpg.json", "--seeds", "1", "--total-frames", "300",
                    "--partial"]) == 2  # only with --report-only


def test_unfinished_run_has_no_score_at_marks_it_has_not_reached(tmp_path):
    # evaluations up to 1,840 of a 2,000-frame budget: the window (1,800, 2,000] has begun, but
    # a score there would be the mean of its first 40 frames only
    rows = [(f, 100.0) for f in range(100, 1801, 100)] + [(1840, 900.0)]
    running = fake_run(tmp_path, "tiny_steve", 0, rows, None)
    summary = scores.summarize_run(running, marks=(1000, 2000), thresholds={}, total_frames=2000)
    assert summary.scores == (100.0, None)
    # and no mean score over the budget: the 18 points it has would not be comparable (and
    # would enter the pairs and the aggregate as if it had finished)
    assert summary.mean_score is None
    done = fake_run(tmp_path / "done", "tiny_steve", 0, rows, 2000)  # same rows, finished
    summary = scores.summarize_run(done, marks=(1000, 2000), thresholds={}, total_frames=2000)
    assert summary.scores == (100.0, 900.0)
    # 1,900's window (1,710, 1,900] holds 100 and 900; 2,000's (1,800, 2,000] holds 900
    assert summary.mean_score == pytest.approx((18 * 100.0 + 500.0 + 900.0) / 20)


def test_report_carries_the_notes(tmp_path):
    out = tmp_path / "out"
    for experiment in ("tiny_ddpg", "tiny_steve"):
        for seed in (0, 1):
            fake_run(out, experiment, seed, [(500, 1.0), (1000, 2.0)], 1000)
    notes = tmp_path / "notes.md"
    bench = tiny_bench(tmp_path, notes=str(notes))
    with pytest.raises(BenchmarkError, match="notes .*notes.md cannot be read"):
        write(bench)
    assert not Path(bench.report).exists()
    notes.write_text("## Goals\n\nTuned on seeds 100 and up.\n")
    report, _ = write(bench, when="today")
    lines = report.read_text().splitlines()
    # after the first paragraph, before the config list
    assert lines.index("## Goals") < lines.index("Configs:")
    assert lines.index("Tuned on seeds 100 and up.") == lines.index("## Goals") + 2
    # stamped with the commit of the code that wrote it
    commit = reference.current_commit() or "unknown (not a git checkout)"
    assert lines[2].startswith(f"Produced by `python bench/x` at commit `{commit}` on today")
    # links of the notes resolve from the report's folder; web addresses and anchors stay
    moved = tmp_path / "elsewhere/notes.md"  # the report is in tmp_path/docs
    moved.parent.mkdir()
    moved.write_text("See [a](a.md#x), [b](../b.md), [w](https://x.org/a.md) and [c](#c).\n")
    lines = write(dataclasses.replace(bench, notes=str(moved)))[0].read_text().splitlines()
    assert ("See [a](../elsewhere/a.md#x), [b](../b.md), [w](https://x.org/a.md) and [c](#c)."
            in lines)
    # a section headed `## Answer` is lifted out of the notes to be the first paragraph
    notes.write_text("## Goals\n\nTuned.\n\n## Answer\n\nNo. It buys little.\n\n## More\n\nx\n")
    lines = write(bench, when="today")[0].read_text().splitlines()
    assert lines[2] == "No. It buys little." and lines[4].startswith("Produced by")
    assert "## Answer" not in lines and lines.index("Tuned.") + 2 == lines.index("## More")


@pytest.mark.slow
def test_thresholds_absent_and_report_only_cli(tmp_path):
    out = tmp_path / "out"
    for seed in (0, 1):
        fake_run(out, "tiny_ddpg", seed, [(100, 5.0), (200, 7.0)], 200)
    report = tmp_path / "r.md"
    cmd = [sys.executable, str(ROOT / "bench/sample_efficiency.py"), str(TINY_DDPG),
           "--seeds", "2", "--total-frames", "200", "--output-root", str(out), "--report",
           str(report), "--report-only"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"report: {report}"
    text = report.read_text()
    assert "No threshold was given" in text
    assert "| environment | algorithm | seeds | 50 | 100 | 150 | 200 |" in text
    assert "| InvertedPendulum-v5 | tiny_ddpg | 2 | - | 5.0 ± 0.0 (5.0–5.0) | - | " in text
    assert f"`python bench/sample_efficiency.py {TINY_DDPG} --seeds 2" in text

    # A user error is one line on stderr, exit status 2, nothing written.
    done = subprocess.run(cmd[:-1] + ["--report", str(tmp_path / "r2.md"), "--seeds", "3",
                                      "--report-only"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: 1 of the 3 run folder(s) do not exist")
    assert done.stderr.count("\n") == 1 and not (tmp_path / "r2.md").exists()


def test_command_line_presets_and_overrides(tmp_path):
    parse = se.build_parser().parse_args

    def bench(*argv):
        args = parse(list(argv))
        args.argv = list(argv)
        return se.benchmark_from_args(args)

    cpu = bench("--preset", "cpu")
    assert len(cpu.configs) == 6 and cpu.seeds == 3 and all(Path(c).is_file()
                                                            for c in cpu.configs)
    # a preset's report goes to the output root; its committed one is written by --publish
    assert cpu.report == str(ROOT / "output/benchmark/cpu/cpu.md")
    assert cpu.committed == str(ROOT / "docs/benchmark/cpu.md") and not cpu.publish
    assert cpu.command == "python bench/sample_efficiency.py --preset cpu"
    gpu = bench("--preset", "gpu")
    assert len(gpu.configs) == 24 and all(Path(c).is_file() for c in gpu.configs)
    assert len({Path(c).parent.name for c in gpu.configs}) == 8
    plans = sweep.plan_runs(gpu.configs, 1, tmp_path)  # every config resolves
    assert {p.run.path.parent.name for p in plans} == set(gpu.thresholds)
    cpu_envs = {p.run.path.parent.name for p in sweep.plan_runs(cpu.configs, 1, tmp_path)}
    assert cpu_envs == set(cpu.thresholds)

    h10 = bench("--preset", "cpu_h10")
    plans = sweep.plan_runs(h10.configs, 1, tmp_path)
    assert [p.run.path.name for p in plans] == ["ddpg.seed0", "h10_mve_tdk.seed0",
                                               "h10_mve.seed0", "h10_steve.seed0"]
    expansions = [config_lib.load_config(c)["policy_config"].get("value_expansion") or {}
                  for c in h10.configs]
    assert [ve.get("rollout_len") for ve in expansions] == [None, 10, 10, 10]
    assert [bool(ve.get("tdk_trick")) for ve in expansions] == [False, True, False, False]
    assert h10.output_root == cpu.output_root  # the DDPG runs are the cpu preset's

    small = bench("--preset", "cpu", "--total-frames", "8000", "--threshold", "Hopper-v5=300",
                  "--seeds", "1", "--output-root", str(tmp_path))
    assert small.marks == (6000, 8000) and small.seeds == 1
    assert small.thresholds["Hopper-v5"] == 300 and small.output_root == str(tmp_path)
    # another budget and seeds: not the committed benchmark, so its report goes to the output
    # root's sample_efficiency.md, without the preset's notes or its committed run copies
    assert small.report == str(tmp_path / se.REPORT_NAME) and small.notes is None
    win4 = bench("--preset", "cpu_win4")
    assert win4.readme == str(ROOT / "README.md") and win4.reference_runs and win4.notes
    assert win4.report == str(ROOT / "output/benchmark/cpu_win4/cpu_win4.md")
    trial = bench("--preset", "cpu_win4", "--total-frames", "3000", "--output-root", str(tmp_path))
    assert (trial.readme, trial.reference_runs, trial.notes, trial.committed) == (None,) * 4
    assert trial.report == str(tmp_path / se.REPORT_NAME)
    assert bench("--preset", "cpu_win4", "--threshold", "Walker2d-v5=500").readme is None
    # the preset's own runs under another output root: its report goes there
    moved = bench("--preset", "cpu_win4", "--output-root", str(tmp_path))
    assert moved.report == str(tmp_path / "cpu_win4.md") and moved.notes == win4.notes
    elsewhere = bench("--preset", "cpu_win4", "--report", str(tmp_path / "r.md"))
    assert elsewhere.report == str(tmp_path / "r.md")
    assert elsewhere.reference_runs == win4.reference_runs and not elsewhere.publish
    explicit = bench(str(TINY_DDPG), "--seeds", "2", "--total-frames", "400",
                     "--output-root", str(tmp_path), "--checkpoints-at", "300,100")
    assert explicit.marks == (100, 300) and explicit.report == str(tmp_path / se.REPORT_NAME)
    for argv, message in [
        ((str(TINY_DDPG),), "--seeds and --total-frames are required"),
        (("--preset", "cpu", str(TINY_DDPG)), "either --preset or config files"),
        (("--preset", "cpu", "--checkpoints-at", "20000"), "beyond the budget of 18000"),
        (("--preset", "cpu", "--report", "x.txt"), "must end in .md"),
        ((), "No config was given"),
    ]:
        with pytest.raises(BenchmarkError, match=message):
            bench(*argv)
    with pytest.raises(SystemExit):
        parse(["--preset", "cpu", "--threshold", "Hopper-v5"])


# ------------------------------------------------------------------------------ end to end


def rows(run: Path) -> list[tuple[int, float]]:
    lines = (run / "log" / f"{run.name}.greedy.csv").read_text().splitlines()
    return [(int(ln.split(",")[2]), float(ln.split(",")[3])) for ln in lines]


def policy_updates(run: Path) -> int:
    return json.loads((run / "checkpoints/policy/latest.json").read_text())["counters"][
        "updates"]


@pytest.mark.slow
def test_tiny_benchmark_runs_resumes_and_reports(cluster, tmp_path):
    """A first, shorter pass stands for an interrupted run; the full pass resumes it."""
    out = tmp_path / "out"
    full = tiny_bench(tmp_path, total_frames=300, marks=(150, 300),
                      thresholds={ENV: 10.0})
    first = dataclasses.replace(full, configs=(str(TINY_DDPG),), seeds=1, total_frames=150,
                                   marks=(150,), report=str(tmp_path / "first/report.md"))
    lines: list[str] = []
    se.run_benchmark(first, address=cluster.address, cpus_per_run=1, out=lines.append,
                     status_seconds=30)
    run = out / ENV / "tiny_ddpg.seed0"
    before_rows, before_updates = rows(run), policy_updates(run)
    assert json.loads((run / "state/finished.json").read_text())["total_frames"] == 150
    assert before_rows and before_updates > 0
    assert (tmp_path / "first/report.md").is_file()

    lines.clear()
    report, figures = se.run_benchmark(full, address=cluster.address, cpus_per_run=1,
                                       out=lines.append, status_seconds=30)
    text = "\n".join(lines)
    assert f"resuming 1 unfinished run(s): {ENV}/tiny_ddpg.seed0" in text, text
    assert "starting 3 new run(s)" in text, text
    finished = json.loads((run / "state/finished.json").read_text())
    assert finished["total_frames"] == 300 and finished["frames"] >= 300
    after = rows(run)
    assert after[: len(before_rows)] == before_rows and len(after) > len(before_rows)
    assert policy_updates(run) > before_updates
    log = (run / "log/valuerl.log").read_text().splitlines()
    updates = [int(part.split("=")[1]) for ln in log for part in ln.split()
               if part.startswith("updates=")]
    resumed = next(i for i, ln in enumerate(log) if ln.startswith("resumed from"))
    assert updates == sorted(updates)  # the counters never went back
    assert int(log[resumed + 1].split("updates=")[1].split()[0]) > before_updates
    hours = [float(ln.split(",")[0]) for ln in (run / "log/tiny_ddpg.seed0.greedy.csv")
             .read_text().splitlines()]
    assert hours == sorted(hours)  # the clock carried over too

    assert report == tmp_path / "docs/report.md"
    assert [f.name for f in figures] == ["report_curves_frames.png", "report_curves_hours.png"]
    assert all(f.stat().st_size > 10_000 for f in figures)
    table = [ln for ln in report.read_text().splitlines()
             if ln.startswith(f"| {ENV} | tiny_")]
    # score, threshold, mean-score and wall-clock tables: one row per algorithm each; the
    # pairwise table: one row (tiny_ddpg against tiny_steve); runs: 4.
    assert [ln.split(" | ")[1] for ln in table] == (["tiny_ddpg", "tiny_steve"] * 3
                                                     + ["tiny_ddpg"] + ["tiny_ddpg", "tiny_steve"]
                                                     + ["tiny_ddpg"] * 2 + ["tiny_steve"] * 2)
    assert table[0].startswith(f"| {ENV} | tiny_ddpg | 2 | ")
    assert table[6].split(" | ")[2] == "tiny_steve"  # the pairwise row: A, then B
    assert all(ln.split(" | ")[3] == "done" for ln in table[9:])
    assert "(report_curves_frames.png)" in report.read_text()


def test_no_report_when_runs_were_stopped_or_failed(tmp_path, monkeypatch):
    bench = tiny_bench(tmp_path)
    calls = []

    def fake_sweep(configs, seeds, **kwargs):
        calls.append((tuple(configs), seeds, kwargs["total_frames"], kwargs["plot"]))
        return [sweep.RunResult(config=c, experiment="x", seed=0, path=f"/runs/{i}",
                                state=state, message="boom")
                for i, (c, state) in enumerate(zip(configs, states, strict=True))]

    monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
    states = ["done", "stopped"]
    with pytest.raises(se.RunsStopped, match="1 run\\(s\\) were stopped.*/runs/1.*again"):
        se.run_benchmark(bench, out=lambda _: None)
    assert se.RunsStopped.exit_status == 130
    states = ["failed", "done"]
    with pytest.raises(se.RunsFailed, match="1 run\\(s\\) failed \\(e.g. /runs/0: boom\\)"):
        se.run_benchmark(bench, out=lambda _: None)
    assert calls == [(bench.configs, 2, 1000, False)] * 2  # the sweep draws no figure of its own
    assert not Path(bench.report).exists()


# ------------------------------------------------------------------------------ issue 14


def test_summary_json_has_the_issue_shape_with_budgets_per_environment(tmp_path, monkeypatch):
    hop = "Hopper-v5"
    out = tmp_path / "out"
    bench = Benchmark(
        name="win", configs=(str(TINY_DDPG), str(TINY_STEVE)), seeds=2, total_frames=2000,
        marks=(1000, 2000), thresholds={ENV: 100.0, hop: 50.0}, output_root=str(out),
        report=str(tmp_path / "docs/win.md"), command="python bench/x",
        budgets={ENV: (1000, (500, 1000)), hop: (2000, (1000, 2000))}, first_seed=100,
        min_episodes=2, headline=("tiny_steve", "tiny_ddpg"))
    # fake runs of both algorithms on both environments, seeds 100 and 101
    for env in (ENV, hop):
        scale = 1.0 if env == ENV else 2.0
        fake_run(out, "tiny_ddpg", 100, [(451 * scale, 10.0), (480 * scale, 30.0),
                                          (950 * scale, 50.0), (1000 * scale, 70.0)],
                 int(1000 * scale), env)
        fake_run(out, "tiny_ddpg", 101, [(460 * scale, 20.0), (990 * scale, 40.0)],
                 int(1000 * scale), env)
        fake_run(out, "tiny_steve", 100, [(455 * scale, 150.0), (500 * scale, 170.0),
                                           (950 * scale, 200.0), (990 * scale, 220.0)],
                 int(1000 * scale), env)
        fake_run(out, "tiny_steve", 101, [(470 * scale, 110.0), (490 * scale, 130.0),
                                           (960 * scale, 100.0), (980 * scale, 120.0)],
                 int(1000 * scale), env)
    runs = [p for p in out.rglob("*.seed*") if p.is_dir()]
    # run_dirs plans the configs' own environment only: point it at the fake runs
    monkeypatch.setattr(Benchmark, "run_dirs", lambda self: sorted(runs))
    report, _ = write(bench, when="today")
    summary = json.loads(report.with_suffix(".json").read_text())
    assert report.with_suffix(".json") == tmp_path / "docs/win.json"
    assert summary["headline"] == {"algorithm": "tiny_steve", "backbone": "tiny_ddpg"}
    assert summary["seeds"] == [100, 101]
    assert set(summary) == {"headline", "seeds", "environments"}
    assert set(summary["environments"]) == {ENV, hop}
    for env, marks in ((ENV, [500, 1000]), (hop, [1000, 2000])):
        e = summary["environments"][env]
        assert set(e) == {"marks", "algorithms", "pairs"} and e["marks"] == marks
        assert set(e["algorithms"]) == {"tiny_ddpg", "tiny_steve"}
        for name, algo in e["algorithms"].items():
            assert set(algo["seeds"]) == {"100", "101"}
            # the config of runs the benchmark planned (the tiny configs are InvertedPendulum's)
            if env == ENV:
                assert set(algo) == {"config", "seeds"}
                assert algo["config"] == f"tests/configs/{name}.json"  # relative to the root
            else:
                assert set(algo) == {"seeds"}
            for run in algo["seeds"].values():
                assert set(run) == {"scores", "frames_to_threshold", "mean_score"}
                assert list(run["scores"]) == [str(m) for m in marks]
        assert [set(p) for p in e["pairs"]] == [{"a", "b", "diff", "p"}]
        pair = e["pairs"][0]
        assert (pair["a"], pair["b"]) == ("tiny_ddpg", "tiny_steve") and pair["diff"] < 0
        assert pair["p"] == pytest.approx(1 / 3)  # steve above ddpg in both seeds: 2 of 6
    ip = summary["environments"][ENV]["algorithms"]
    # min_episodes 2: seed 101 of ddpg has one episode per window -> no score at all
    assert ip["tiny_ddpg"]["seeds"]["101"] == {
        "scores": {"500": None, "1000": None}, "frames_to_threshold": None, "mean_score": None}
    assert ip["tiny_ddpg"]["seeds"]["100"]["scores"] == {"500": 20.0, "1000": 60.0}
    assert ip["tiny_steve"]["seeds"]["100"]["frames_to_threshold"] == 500
    assert summary["environments"][hop]["algorithms"]["tiny_steve"]["seeds"]["101"][
        "scores"] == {"1000": 120.0, "2000": 110.0}
    text = report.read_text()
    assert "seeds 100-101" in text and "1k frames on InvertedPendulum-v5" in text
    assert "| environment | algorithm | seeds | 500 | 1k |" in text  # one table per env
    assert "| environment | algorithm | seeds | 1k | 2k |" in text
    # the cost of a headline frame against a backbone frame (fake hours: 1/36000 h per frame)
    assert ("What a frame costs on this machine: a tiny_steve frame against a tiny_ddpg frame"
            in text and "InvertedPendulum-v5 1.0x (100 against 100 ms per frame)" in text)


def test_cpu_win_preset(tmp_path):
    parse = se.build_parser().parse_args

    def bench(*argv):
        args = parse(list(argv))
        args.argv = list(argv)
        return se.benchmark_from_args(args)

    win = bench("--preset", "cpu_win")
    assert win.seed_list() == [0, 1, 2, 3, 4] and win.headline == ("steve_td3", "td3")
    assert win.committed == str(ROOT / "docs/benchmark/cpu_win.md")
    assert win.budget("InvertedPendulum-v5") == (20_000, tuple(range(1000, 20_001, 1000)))
    assert win.budget("Hopper-v5") == (60_000, tuple(range(5000, 60_001, 5000)))
    plans = sweep.plan_runs(win.configs, 1, tmp_path)
    assert sorted({(p.run.path.parent.name, p.run.path.name) for p in plans}) == sorted(
        (env, f"{algo}.seed0") for env in ("Hopper-v5", "InvertedPendulum-v5")
        for algo in ("steve_td3", "td3", "ddpg", "steve"))
    groups = dict(se.budget_groups(win))
    assert {config_lib.load_config(c)["env"]["name"] for c in groups[20_000]} == {
        "InvertedPendulum-v5"}
    assert {config_lib.load_config(c)["env"]["name"] for c in groups[60_000]} == {"Hopper-v5"}
    # the backbone is the headline config without the model, everything else equal
    for env in ("invertedpendulum", "hopper"):
        head = config_lib.load_config(
            ROOT / f"config/experiments/benchmark/cpu_win/{env}/steve_td3.json")
        back = config_lib.load_config(
            ROOT / f"config/experiments/benchmark/cpu_win/{env}/td3.json")
        assert back["model_config"] is False and back["policy_config"]["value_expansion"] is False
        assert head["policy_config"]["backbone"] == "td3" and head["model_config"]
        for c in (head, back):
            c.pop("model_config")
            c["policy_config"].pop("value_expansion")
        assert head == back
    tuning = bench("--preset", "cpu_win", "--first-seed", "100", "--seeds", "2")
    assert tuning.seed_list() == [100, 101]
    assert tuning.report == str(ROOT / "output/benchmark/cpu_win/sample_efficiency.md")
    # the committed notes describe the held-out runs: a tuning report goes without them
    assert win.notes == str(ROOT / "docs/benchmark/cpu_win_notes.md")
    assert Path(win.notes).is_file() and tuning.notes is None
    short = bench("--preset", "cpu_win", "--total-frames", "3000")
    assert short.budget("Hopper-v5") == (3000, (3000,))
    assert short.budget("InvertedPendulum-v5") == (3000, (1000, 2000, 3000))


def test_committed_copies_carried_tasks_and_the_aggregate(tmp_path):
    # the runs of two algorithms, three seeds, on one task; a second task carried from a
    # committed summary; the report copies the runs, and rebuilds from the copies alone
    out, kept = tmp_path / "out", tmp_path / "docs/runs"
    carried = {"environments": {"Hopper-v5": {"marks": [1000], "pairs": [
        {"a": "tiny_ddpg", "b": "tiny_steve", "diff": -10.0, "p": 0.7}], "algorithms": {
        algo: {"seeds": {str(s): {"scores": {"1000": v}, "frames_to_threshold": None,
                                  "mean_score": v} for s, v in enumerate(values, start=100)}}
        for algo, values in (("tiny_steve", [30.0, 40.0, 50.0]),
                             ("tiny_ddpg", [10.0, 20.0, 60.0]))}}}}
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/old.json").write_text(json.dumps(carried))
    spec = aggregate.AggregateSpec(
        tasks=(ENV, "Hopper-v5", "Walker2d-v5"), pairs=(("tiny_steve", "tiny_ddpg"),),
        algorithms=("tiny_steve", "tiny_ddpg"), reps=300,
        normalisation={ENV: (0.0, 100.0), "Hopper-v5": (0.0, 100.0), "Walker2d-v5": (0, 1)})
    bench = Benchmark(
        name="agg", configs=(str(TINY_DDPG), str(TINY_STEVE)), seeds=3, total_frames=1000,
        marks=(500, 1000), thresholds={ENV: 50.0}, output_root=str(out),
        report=str(tmp_path / "docs/agg.md"), command="python bench/x", first_seed=100,
        reference_runs=str(kept), carried=(str(tmp_path / "docs/old.json"),), aggregate=spec,
        readme=str(tmp_path / "README.md"), committed=str(tmp_path / "docs/agg.md"),
        publish=True)
    (tmp_path / "README.md").write_text("# Title\n\nno markers\n")
    with pytest.raises(BenchmarkError, match="README.md has no line starting with "
                                                "'<!-- agg table' followed by one with"):
        write(bench)  # before anything is written
    assert not kept.exists() and not (tmp_path / "docs/agg.md").exists()
    (tmp_path / "README.md").write_text("# Title\n<!-- agg table (generated) -->\nold\n"
                                        "<!-- end of agg table -->\nafter\n")
    for seed, (low, high) in zip((100, 101, 102), ((10, 30), (20, 60), (40, 50)), strict=True):
        fake_run(out, "tiny_ddpg", seed, [(450, low), (500, low), (950, high), (1000, high)],
                 1000)
        fake_run(out, "tiny_steve", seed, [(450, low + 5), (500, low + 5), (950, high + 5),
                                           (1000, high + 5)], 1000)
    report, figures = write(bench, when="today")
    summary = json.loads(report.with_suffix(".json").read_text())
    # the carried task is in the summary unchanged, marked with where it came from
    hop = summary["environments"]["Hopper-v5"]
    assert hop.pop("carried_from").endswith("/old.json")
    assert hop == carried["environments"]["Hopper-v5"]
    # the aggregate: over the complete tasks, Walker2d-v5 pending; the same from the file alone
    block = summary["aggregate"]
    assert block["tasks"] == [ENV, "Hopper-v5"] and block["pending_tasks"] == ["Walker2d-v5"]
    assert block["normalisation"][ENV] == [0.0, 100.0]
    poi = block["probability_of_improvement"][0]
    assert (poi["a"], poi["b"]) == ("tiny_steve", "tiny_ddpg")
    # P(steve > ddpg) per task, averaged: Hopper 6 of the 9 pairs of seeds
    steve = [r["mean_score"] for r in
             summary["environments"][ENV]["algorithms"]["tiny_steve"]["seeds"].values()]
    ddpg = [r["mean_score"] for r in
            summary["environments"][ENV]["algorithms"]["tiny_ddpg"]["seeds"].values()]
    wins = np.mean([[a > b or (a == b) / 2 for b in ddpg] for a in steve])
    assert poi["estimate"] == pytest.approx((wins + 6 / 9) / 2)
    assert {k: v for k, v in block.items() if k != "pending_tasks"} == \
        aggregate.recompute(summary)
    text = report.read_text()
    assert "## Across tasks" in text and "Not yet in the aggregate" in text
    assert "## Tasks carried from earlier reports" in text
    # each task alone, beside its permutation p: Hopper's 6 of 9 and the carried p
    hop_poi = block["probability_of_improvement_by_task"]["Hopper-v5"][0]
    assert hop_poi["estimate"] == pytest.approx(6 / 9)
    assert (f"| Hopper-v5 | tiny_steve | tiny_ddpg | 0.67 | [{hop_poi['ci'][0]:.2f}, "
            f"{hop_poi['ci'][1]:.2f}] | 0.700 |") in text
    # the headline table (README.md shows cpu_win4's): Hopper's carried 30, 40, 50 -> 40 ± 8;
    # Walker2d-v5 has no run; the IQM over the two complete tasks
    table = markdown.headline_table(summary)
    assert table[0].startswith(f"| algorithm | {ENV}, 1k frames | Hopper-v5, 1k frames | "
                               "Walker2d-v5 | IQM, normalised, over 2 tasks |")
    steve_row = [c.strip() for c in table[2].strip("|").split("|")]
    assert steve_row[0] == "`tiny_steve`" and steve_row[2:4] == ["40 ± 8", "no finished run"]
    iqm = block["iqm"]["tiny_steve"]
    assert steve_row[4] == f"{iqm['estimate']:.2f} [{iqm['ci'][0]:.2f}, {iqm['ci'][1]:.2f}]"
    assert f"**{poi['estimate']:.2f}**" in table[-2] and all(line in text for line in table)
    assert (tmp_path / "README.md").read_text() == (
        "# Title\n<!-- agg table (generated) -->\n" + "\n".join(table).rstrip("\n")
        + "\n<!-- end of agg table -->\nafter\n")
    assert "What a frame costs on this machine" not in text  # no headline pair here
    assert any(f.name == "agg_profile.png" for f in figures)
    assert "![performance profile](agg_profile.png)" in text
    # every run was copied into the committed layout
    copies = sorted(p.relative_to(kept).as_posix() for p in kept.glob("*/*"))
    assert copies == [f"{ENV}/{a}.seed{s}" for a in ("tiny_ddpg", "tiny_steve")
                      for s in (100, 101, 102)]
    # with the run folders gone, the committed copies alone give the same numbers
    first = report.with_suffix(".json").read_text()
    out.rename(tmp_path / "elsewhere")
    write(bench, when="today")
    assert report.with_suffix(".json").read_text() == first


def test_the_committed_runs_rebuild_the_committed_summary(tmp_path):
    # anyone with the repository alone: --report-only over the committed runs of cpu_win4 (no
    # run folder under the output root) gives the committed summary, number for number
    committed = ROOT / "docs/benchmark/cpu_win4.json"
    bench = dataclasses.replace(se.preset("cpu_win4"), output_root=str(tmp_path / "none"),
                                   report=str(tmp_path / "cpu_win4.md"), readme=None)
    kept = Path(bench.reference_runs)
    before = sorted((p, p.stat().st_mtime_ns) for p in kept.rglob("*") if p.is_file())
    assert before, "docs/benchmark/runs/cpu_win4 holds no committed run"
    write(bench, when="today", partial=True)
    assert json.loads((tmp_path / "cpu_win4.json").read_text()) == json.loads(
        committed.read_text())
    # the committed copies were read, not written
    assert sorted((p, p.stat().st_mtime_ns) for p in kept.rglob("*") if p.is_file()) == before


def test_the_readme_table_is_the_committed_summarys():
    # README.md shows headline_table of docs/benchmark/cpu_win4.json between its two markers;
    # regenerating the report without updating README.md (or editing its numbers) fails here
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- cpu_win4 table")
    shown = readme[readme.index("\n", start) + 1:readme.index("<!-- end of cpu_win4 table -->")]
    summary = json.loads((ROOT / "docs/benchmark/cpu_win4.json").read_text())
    table = markdown.headline_table(summary)
    assert shown.rstrip("\n").splitlines() == "\n".join(table).rstrip("\n").splitlines()
    # the table holds the summary's numbers: the IQM of the headline algorithm, for one
    iqm = summary["aggregate"]["iqm"][summary["headline"]["algorithm"]]
    assert f"{iqm['estimate']:.2f} [{iqm['ci'][0]:.2f}, {iqm['ci'][1]:.2f}]" in shown


def test_runs_finished_in_the_committed_copies_are_not_run_again(tmp_path, monkeypatch):
    # a benchmark continued on a new machine: the output root is empty, the repository holds a
    # finished copy of tiny_ddpg seed 1 and an unfinished one of tiny_steve seed 0
    kept = tmp_path / "kept"
    bench = tiny_bench(tmp_path, reference_runs=str(kept))
    rows = [(450, 10.0), (500, 20.0), (950, 30.0), (1000, 40.0)]
    fake_run(kept, "tiny_ddpg", 1, rows, finished_at=1000)
    fake_run(kept, "tiny_steve", 0, rows, finished_at=None)
    fake_run(kept, "tiny_steve", 1, rows, finished_at=500)  # a smaller budget: not finished
    assert se.finished_copies(bench) == {(str(TINY_DDPG.resolve()), 1)}
    assert se.sweep_groups(bench, se.finished_copies(bench)) == [
        (1000, (str(TINY_DDPG),), 1), (1000, (str(TINY_STEVE),), 2)]  # seed 0 only, both
    assert se.sweep_groups(bench) == [(1000, bench.configs, 2)]  # nothing committed: one sweep
    calls, said = [], []

    def fake_sweep(configs, seeds, **kwargs):
        calls.append((tuple(configs), seeds))
        return []

    monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
    with pytest.raises(BenchmarkError, match="do not exist"):  # the sweep ran nothing here
        se.run_benchmark(bench, out=said.append)
    assert calls == [((str(TINY_DDPG),), 1), ((str(TINY_STEVE),), 2)]
    assert said[0].startswith("1 run(s) finished in the committed copies")
    # a folder under the output root wins over the copy: the sweep decides about it
    fake_run(tmp_path / "out", "tiny_ddpg", 1, rows[:2], finished_at=None)
    assert se.finished_copies(bench) == set()
