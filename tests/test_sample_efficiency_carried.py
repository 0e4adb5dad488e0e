"""Carried algorithms (Benchmark.carried_algorithms): named algorithms of one environment taken
from a committed summary into an environment the benchmark runs too, compared with its own runs
in the tables, the pairs and the aggregate, and marked `carried_from` in the summary.

Fake runs and a fake committed summary under tmp_path (test_sample_efficiency.py's helpers).
"""

import json
from pathlib import Path

import pytest

from reports import aggregate
from reports.benchmark import BenchmarkError
from reports.report import write_report
from test_sample_efficiency import ENV, fake_run, se, tiny_bench

OLD = {"environments": {ENV: {"marks": [500, 1000], "pairs": [], "algorithms": {
    "tiny_td3": {"config": "config/old/tiny_td3.json", "seeds": {
        str(s): {"scores": {"500": v, "1000": v + 10}, "frames_to_threshold": 500,
                 "mean_score": v + 5} for s, v in ((0, 25.0), (1, 35.0))}},
    "tiny_ddpg": {"seeds": {}}}}}}  # an algorithm of the same name as one of the tiny runs


def carried_bench(tmp_path: Path, algorithms=("tiny_td3",), **changes):
    old = tmp_path / "docs/old.json"
    old.parent.mkdir(exist_ok=True)
    old.write_text(json.dumps(OLD))
    spec = aggregate.AggregateSpec(tasks=(ENV,), pairs=(("tiny_steve", "tiny_td3"),),
                                   algorithms=("tiny_steve", "tiny_td3"), reps=200,
                                   normalisation={ENV: (0.0, 100.0)})
    out = tmp_path / "out"
    for experiment, score in (("tiny_ddpg", 10.0), ("tiny_steve", 50.0)):
        for seed in (0, 1):
            if not (out / ENV / f"{experiment}.seed{seed}").exists():
                fake_run(out, experiment, seed, [(450, score), (500, score), (950, score),
                                                 (1000, score + seed)], 1000)
    return tiny_bench(tmp_path, carried_algorithms=((str(old), ENV, tuple(algorithms)),),
                      aggregate=spec, **changes)


def test_carried_algorithms_join_the_tables_pairs_and_aggregate(tmp_path):
    bench = carried_bench(tmp_path)
    drawn = []

    def draw_curves(runs, base):
        drawn.extend(runs)
        return se.draw_curves(runs, base)

    report, _ = write_report(bench, draw_curves, when="today")
    summary = json.loads(report.with_suffix(".json").read_text())
    env = summary["environments"][ENV]
    td3 = env["algorithms"]["tiny_td3"]
    assert td3.pop("carried_from") == str(tmp_path / "docs" / "old.json")
    assert td3 == OLD["environments"][ENV]["algorithms"]["tiny_td3"]  # config and seeds as is
    assert "carried_from" not in env  # the environment is this benchmark's own
    assert set(env["algorithms"]) == {"tiny_ddpg", "tiny_steve", "tiny_td3"}
    # the pairs and the per-task statistics compare the carried runs with the own ones
    pair = next(p for p in env["pairs"] if {p["a"], p["b"]} == {"tiny_steve", "tiny_td3"})
    assert pair["p"] == pytest.approx(1 / 3)  # about 50 against 30 and 40: 2 of C(4, 2)
    block = summary["aggregate"]
    assert block["tasks"] == [ENV] and block["pending_tasks"] == []
    assert block["probability_of_improvement"][0]["estimate"] == pytest.approx(1.0)
    lines = report.read_text().splitlines()
    assert any(ln.startswith(f"| {ENV} | tiny_td3 (carried) | 2 | 30.0 ± 5.0") for ln in lines)
    assert any(ln.startswith(f"| {ENV} | tiny_td3 (carried) | 100 | 2/2 | 500 |")
               for ln in lines)
    assert any(ln.startswith("**Carried from earlier reports**") and "`tiny_td3` on " in ln
               and "[old](old.json)" in ln for ln in lines)
    # not in the hours, the curves or the list of runs; the own runs are counted as before
    assert [ln for ln in lines[lines.index("## Wall-clock time"):] if "tiny_td3" in ln] == []
    assert sorted(Path(r).name for r in drawn) == [
        f"{a}.seed{s}" for a in ("tiny_ddpg", "tiny_steve") for s in (0, 1)]
    assert " from 4 run(s) of 2 config(s)" in lines[2]


@pytest.mark.parametrize("algorithms, changes, message", [
    (("tiny_nothing",), {}, "old.json has no algorithm 'tiny_nothing' on InvertedPendulum-v5 "
                            "(it has tiny_ddpg, tiny_td3); fix the preset's carried_algorithms."),
    (("tiny_td3",), {"marks": (1000,)},
     "old.json scores InvertedPendulum-v5 at other frame counts than this benchmark (another "
     "budget or marks); carry InvertedPendulum-v5 from a report with the same budget and marks."),
    (("tiny_ddpg",), {}, "tiny_ddpg on InvertedPendulum-v5 is both run by this benchmark and "
                         "carried from an earlier report; drop it from the preset's configs or "
                         "its carried_algorithms."),
])
def test_a_carried_algorithm_that_cannot_be_compared_is_refused(tmp_path, algorithms, changes,
                                                                message):
    bench = carried_bench(tmp_path, algorithms, **changes)
    with pytest.raises(BenchmarkError) as error:
        write_report(bench, se.draw_curves, when="today")
    assert str(error.value).endswith(message), str(error.value)
    assert not list(Path(bench.report).parent.glob("report*"))  # no report, summary or figure


def test_a_report_before_any_task_is_complete_lists_every_task_as_pending(tmp_path):
    # the oracle preset's report while its first runs are going: steve's seed 1 has no mean
    # score over the budget yet (its run is at 550 of 1,000 frames), so no task is complete
    out = tmp_path / "out"
    fake_run(out, "tiny_steve", 1, [(450, 50.0), (500, 50.0), (550, 50.0)], None)
    bench = carried_bench(tmp_path)
    report, figures = write_report(bench, se.draw_curves, when="today", partial=True)
    block = json.loads(report.with_suffix(".json").read_text())["aggregate"]
    assert block["tasks"] == [] and block["pending_tasks"] == [ENV]
    assert block["probability_of_improvement"] == [] and block["iqm"] == {}
    assert not any(f.name.endswith("_profile.png") for f in figures)
    assert "Not yet in the aggregate" in report.read_text()
