"""bench/sample_efficiency.py's --publish and --rerun: which files a report writes and which it
leaves alone, what a re-run trains, and the one-sentence refusals.

A preset's report goes to its output root; only --publish writes the committed report, its
summary, the committed run copies and README.md's table. --rerun trains and reads the runs under
the output root only, and its report compares them with the committed summary. Fake run folders
and a fake committed benchmark under tmp_path (test_sample_efficiency.py's helpers); no Ray.
"""

import dataclasses
import json
from pathlib import Path

import pytest

import sweep
from reports import aggregate, markdown
from reports.benchmark import BenchmarkError
from test_sample_efficiency import ENV, ROOT, TINY_DDPG, TINY_STEVE, fake_run, se, tiny_bench, write

ROWS = [(450, 10.0), (500, 20.0), (950, 30.0), (1000, 40.0)]
README = "# Title\n<!-- tiny test table -->\nold\n<!-- end of tiny test table -->\n"


def committed_bench(tmp_path: Path, **changes):
    """A tiny benchmark with a committed report, summary, run copies and README table: every
    run of both configs, seeds 0 and 1, finished in the copies (as on a fresh clone)."""
    docs, kept = tmp_path / "docs", tmp_path / "docs/runs"
    docs.mkdir()
    for experiment in ("tiny_ddpg", "tiny_steve"):
        for seed in (0, 1):
            fake_run(kept, experiment, seed, ROWS, finished_at=1000)
    (tmp_path / "README.md").write_text(README)
    spec = aggregate.AggregateSpec(tasks=(ENV,), pairs=(("tiny_steve", "tiny_ddpg"),),
                                   algorithms=("tiny_steve", "tiny_ddpg"), reps=200,
                                   normalisation={ENV: (0.0, 100.0)})
    bench = tiny_bench(tmp_path, report=str(tmp_path / "out/tiny test.md"),
                       committed=str(docs / "tiny.md"), reference_runs=str(kept),
                       readme=str(tmp_path / "README.md"), aggregate=spec)
    publish = dataclasses.replace(bench, publish=True, report=bench.committed)
    write(publish, when="the commit")  # the committed benchmark
    return dataclasses.replace(bench, **changes)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_a_report_goes_to_the_output_root_and_leaves_the_committed_files_alone(tmp_path):
    bench = committed_bench(tmp_path)
    before = files(tmp_path / "docs")
    readme = (tmp_path / "README.md").read_text()
    assert "| `tiny_ddpg` |" in readme  # the committed benchmark's publication wrote its table
    # a fresh clone: no run under the output root, so the copies are read
    report, figures = write(bench, when="today")
    assert report == tmp_path / "out/tiny test.md" and report.with_suffix(".json").is_file()
    assert all(f.parent == tmp_path / "out" for f in figures)
    assert json.loads(report.with_suffix(".json").read_text()) == json.loads(
        (tmp_path / "docs/tiny.json").read_text())
    assert files(tmp_path / "docs") == before and (tmp_path / "README.md").read_text() == readme
    # runs under the output root (newer than the copies) are what the report counts; the
    # copies stay as they were
    fake_run(Path(bench.output_root), "tiny_ddpg", 0, [(500, 70.0), (1000, 90.0)], 1000)
    write(bench, when="today")
    summary = json.loads(report.with_suffix(".json").read_text())
    assert summary["environments"][ENV]["algorithms"]["tiny_ddpg"]["seeds"]["0"]["scores"] == {
        "500": 70.0, "1000": 90.0}
    assert files(tmp_path / "docs") == before and (tmp_path / "README.md").read_text() == readme


def test_publish_writes_the_committed_report_copies_and_readme_table(tmp_path):
    bench = committed_bench(tmp_path)
    readme = (tmp_path / "README.md").read_text()
    fake_run(Path(bench.output_root), "tiny_ddpg", 0, [(500, 70.0), (1000, 90.0)], 1000)
    publish = dataclasses.replace(bench, publish=True, report=bench.committed)
    report, _ = write(publish, when="today")
    assert report == tmp_path / "docs/tiny.md"
    summary = json.loads((tmp_path / "docs/tiny.json").read_text())
    assert summary["environments"][ENV]["algorithms"]["tiny_ddpg"]["seeds"]["0"]["scores"] == {
        "500": 70.0, "1000": 90.0}
    copy = tmp_path / f"docs/runs/{ENV}/tiny_ddpg.seed0/log/tiny_ddpg.seed0.greedy.csv"
    assert copy.read_text().splitlines()[-1].endswith(",1000,90.000000")
    # README.md's table: the new summary's (tiny_ddpg's seed 0 moved its numbers)
    table = "\n".join(markdown.headline_table(summary)).rstrip("\n") + "\n"
    assert table in (tmp_path / "README.md").read_text() and table not in readme
    assert not (tmp_path / "out/tiny test.md").exists()


def test_publish_refuses_to_drop_a_run_the_committed_summary_holds(tmp_path):
    bench = committed_bench(tmp_path)
    # tiny_steve seed 1 started over under the output root: not finished there
    fake_run(Path(bench.output_root), "tiny_steve", 1, ROWS[:2], finished_at=None)
    before = files(tmp_path / "docs")
    publish = dataclasses.replace(bench, publish=True, report=bench.committed)
    with pytest.raises(BenchmarkError) as error:
        write(publish, when="today", partial=True)
    assert str(error.value) == (
        f"Publishing would drop 1 finished run(s) that {tmp_path}/docs/tiny.json holds (e.g. "
        f"tiny_steve seed 1 on {ENV}, finished neither under the output root nor in the "
        f"committed copies); finish them, or leave out --publish to write the report to the "
        f"output root.")
    assert files(tmp_path / "docs") == before  # no copy refreshed, nothing written


def test_rerun_trains_every_run_again_and_compares_with_the_committed_report(tmp_path,
                                                                               monkeypatch):
    bench = committed_bench(tmp_path)
    rerun = dataclasses.replace(bench, rerun=True)
    # without --rerun a clone trains nothing: every copy finished
    assert se.sweep_groups(bench, se.finished_copies(bench)) == []
    assert se.finished_copies(rerun) == set()
    calls, said = [], []

    def fake_sweep(configs, seeds, **kwargs):
        calls.append((tuple(configs), seeds, kwargs["output_root"]))
        for config in configs:
            for seed in range(seeds):
                fake_run(Path(kwargs["output_root"]), Path(config).stem, seed,
                         [(500, 100.0), (1000, 200.0)], 1000)
        return []

    monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
    before = files(tmp_path / "docs")
    readme = (tmp_path / "README.md").read_text()
    report, _ = se.run_benchmark(rerun, out=said.append)
    assert calls == [(rerun.configs, 2, rerun.output_root)]  # all of them, into the output root
    assert report == tmp_path / "out/tiny test.md"
    assert files(tmp_path / "docs") == before and (tmp_path / "README.md").read_text() == readme
    lines = report.read_text().splitlines()
    start = lines.index("## Against the committed report")
    assert "[tiny](../docs/tiny.md)" in lines[start + 2]
    # the committed runs' mean scores beside the re-run's own (never the copies')
    committed = json.loads((tmp_path / "docs/tiny.json").read_text())
    theirs = committed["environments"][ENV]["algorithms"]["tiny_ddpg"]["seeds"]["0"]["mean_score"]
    ours = json.loads(report.with_suffix(".json").read_text())["environments"][ENV][
        "algorithms"]["tiny_ddpg"]["seeds"]["0"]["mean_score"]
    assert ours != theirs
    row = next(ln for ln in lines[start:] if ln.startswith(f"| {ENV} | tiny_ddpg |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2].startswith(f"{theirs:.1f} ± 0.0") and cells[3].startswith(f"{ours:.0f} ± 0")
    assert cells[5:] == ["0.333", "2 / 2"]  # 2 seeds each, fully separated: 2 of C(4, 2)


def parse(*argv):
    args = se.build_parser().parse_args(list(argv))
    args.argv = list(argv)
    return se.benchmark_from_args(args)


def test_the_flags_on_the_command_line(tmp_path):
    win4 = parse("--preset", "cpu_win4")
    assert win4.report == str(ROOT / "output/benchmark/cpu_win4/cpu_win4.md")
    assert not win4.publish and not win4.rerun
    published = parse("--preset", "cpu_win4", "--report-only", "--publish")
    assert published.publish and published.report == str(ROOT / "docs/benchmark/cpu_win4.md")
    assert published.command == "python bench/sample_efficiency.py --preset cpu_win4"
    rerun = parse("--preset", "cpu_win4", "--rerun", "--output-root", str(tmp_path))
    assert rerun.rerun and rerun.report == str(tmp_path / "cpu_win4.md")
    assert rerun.command.endswith("--preset cpu_win4 --rerun --output-root " + str(tmp_path))
    # cpu_win4 carries cpu_win.json: a cpu_win report writes it only when published
    assert parse("--preset", "cpu_win").report == str(ROOT / "output/benchmark/cpu_win/cpu_win.md")
    for argv, message in [
        (("--preset", "cpu_win4", "--publish", "--rerun"),
         "--publish and --rerun together would replace the committed runs with the re-run's; "
         "re-run first, then publish a report of the runs you mean to commit."),
        ((str(TINY_DDPG), str(TINY_STEVE), "--seeds", "1", "--total-frames", "300", "--publish"),
         "--publish applies to a preset's committed report; name one with --preset."),
        (("--preset", "tiny", "--rerun"),
         "The preset tiny has no committed report; leave out --rerun."),
        (("--preset", "cpu_win4", "--first-seed", "100", "--publish"),
         "--publish applies to the preset's own seeds, budgets, marks and thresholds; leave out "
         "the options that change them (or --publish)."),
        (("--preset", "cpu_win4", "--publish", "--report", str(tmp_path / "r.md")),
         "--publish writes the committed report docs/benchmark/cpu_win4.md; leave out --report "
         "(or --publish)."),
        (("--preset", "cpu", "--rerun"),
         "--rerun compares the runs with the committed summary docs/benchmark/cpu.json, which "
         "does not exist; leave out --rerun."),
    ]:
        with pytest.raises(BenchmarkError) as error:
            parse(*argv)
        assert str(error.value) == message


def test_a_refusal_is_one_line_and_exit_status_2(capsys):
    assert se.main(["--preset", "cpu_win4", "--publish", "--rerun"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --publish and --rerun together") and err.count("\n") == 1
