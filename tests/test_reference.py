"""The committed reference results (reports/reference.py): bands from a summary, matching a run
to the
reference's algorithm by its config, copying runs into the committed layout, and
`plot.py --reference` with its one-sentence errors."""

import json
from pathlib import Path

import numpy as np
import pytest

import config as config_lib
import plot
from reports import reference, runs

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "config/experiments/quickstart/steve_td3_pendulum.json"
ENV = "InvertedPendulum-v5"


def quickstart_run(root: Path, seed: int = 3, frames=range(2000, 10_001, 250)) -> Path:
    """A run folder as master.py leaves one for the quick-start config: log/hps.json is the
    resolved config with the run's name and seed, log/<run>.greedy.csv five episodes per
    evaluated frame count (a rising score)."""
    run = root / ENV / f"steve_td3_pendulum.seed{seed}"
    (run / "log").mkdir(parents=True)
    hps = dict(config_lib.load_config(QUICKSTART), name=run.name, seed=seed)
    (run / "log/hps.json").write_text(json.dumps(hps))
    rows = [f"{f / 3600:.6f},{i},{f},{min(1000.0, (f - 2000) / 4):.3f}\n"
            for i, f in enumerate(frames) for _ in range(5)]
    (run / "log" / f"{run.name}.greedy.csv").write_text("".join(rows))
    return run


def test_band_from_a_summary():
    summary = {"environments": {"E": {"marks": [10, 20, 30], "algorithms": {"a": {"seeds": {
        "0": {"scores": {"10": 1.0, "20": 5.0, "30": None}},
        "1": {"scores": {"10": 3.0, "20": None, "30": None}}}}}}}}
    band = reference.band(summary, "E", "a")
    np.testing.assert_array_equal(band["frames"], [10, 20])  # no seed has a score at 30
    np.testing.assert_array_equal(band["mean"], [2.0, 5.0])
    np.testing.assert_array_equal(band["low"], [1.0, 5.0])
    np.testing.assert_array_equal(band["high"], [3.0, 5.0])
    np.testing.assert_array_equal(band["seeds"], [2, 1])
    with pytest.raises(reference.UnknownReference, match="no algorithm 'b' on E"):
        reference.band(summary, "E", "b")
    with pytest.raises(reference.UnknownReference, match="has no F"):
        reference.band(summary, "F", "a")


def test_committed_summaries_are_presets_and_name_their_configs():
    assert "cpu_win" in reference.presets()
    summary = reference.load_summary("cpu_win")
    for env, block in summary["environments"].items():
        for algo, entry in block["algorithms"].items():
            resolved = config_lib.load_config(ROOT / entry["config"])
            assert resolved["env"]["name"] == env and Path(entry["config"]).stem == algo
    with pytest.raises(reference.UnknownReference, match="no reference preset 'nope'"):
        reference.load_summary("nope")


def test_the_quick_start_matches_the_cpu_win_headline_by_its_config(tmp_path):
    run = quickstart_run(tmp_path)
    summary = reference.load_summary("cpu_win")
    hps = json.loads((run / "log/hps.json").read_text())
    # its label (steve_td3_pendulum) is not the reference's: the config decides
    assert reference.match_algorithm(summary, ENV, hps, "steve_td3_pendulum") == "steve_td3"
    other = dict(hps, policy_config=dict(hps["policy_config"], learning_rate=0.5))
    assert reference.match_algorithm(summary, ENV, other, "steve_td3_pendulum") is None
    assert reference.match_algorithm(summary, ENV, other, "ddpg") == "ddpg"


def test_plot_reference_draws_a_png(tmp_path, capsys):
    run = quickstart_run(tmp_path)
    out = tmp_path / "compare.png"
    assert plot.main([str(run), "--reference", "cpu_win", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a root holding the run works too, and --algorithm overrides the match
    assert plot.main([str(tmp_path), "--reference", "cpu_win", "--algorithm", "ddpg",
                      "--out", str(tmp_path / "ddpg.png")]) == 0
    assert (tmp_path / "ddpg.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--reference", "nope"], "There is no reference preset 'nope'"),
    (["--reference", "cpu_win", "--algorithm", "sac"], "no algorithm 'sac' on InvertedPendulum"),
    (["--reference", "cpu_win", "--x", "hours"], "against frames only"),
    (["--algorithm", "ddpg"], "--algorithm only applies with --reference"),
])
def test_plot_reference_errors_are_one_sentence_and_exit_2(tmp_path, capsys, argv, message):
    run = quickstart_run(tmp_path)
    out = tmp_path / "x.png"
    assert plot.main([str(run), *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("plot.py: error:")
    assert not out.exists()


def test_plot_reference_refuses_an_environment_the_preset_lacks(tmp_path, capsys):
    run = quickstart_run(tmp_path)
    moved = tmp_path / "Walker2d-v5" / run.name
    moved.parent.mkdir()
    run.rename(moved)
    hps = json.loads((moved / "log/hps.json").read_text())
    hps["env"]["name"] = "Walker2d-v5"
    (moved / "log/hps.json").write_text(json.dumps(hps))
    assert plot.main([str(moved), "--reference", "cpu_win", "--out",
                      str(tmp_path / "w.png")]) == 2
    assert "The reference has no Walker2d-v5" in capsys.readouterr().err


def test_export_run_copies_what_the_report_reads_and_leaves_the_run_alone(tmp_path):
    run = quickstart_run(tmp_path / "runs")
    (run / "state").mkdir()
    (run / "state/finished.json").write_text('{"total_frames": 10000}')
    (run / "checkpoints").mkdir()
    (run / "checkpoints/big.bin").write_bytes(b"x" * 1000)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    dest = reference.export_run(run, tmp_path / "kept", commit="abc123")
    assert dest == tmp_path / "kept" / ENV / run.name
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "log/hps.json", f"log/{run.name}.greedy.csv", "provenance.json", "state/finished.json"]
    for name in ("log/hps.json", f"log/{run.name}.greedy.csv", "state/finished.json"):
        assert (dest / name).read_bytes() == (run / name).read_bytes()
    provenance = json.loads((dest / "provenance.json").read_text())
    assert provenance["commit"] == "abc123" and provenance["source"] == str(run.resolve())
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # plot.py reads the copy as a run
    np.testing.assert_array_equal(runs.load_greedy(dest), runs.load_greedy(run))
    # nothing new in the run: the copy is left as it is (its provenance too)
    assert reference.export_run(run, tmp_path / "kept", commit="def456") == dest
    assert json.loads((dest / "provenance.json").read_text())["commit"] == "abc123"
    # the run went on: the copy follows
    with open(run / "log" / f"{run.name}.greedy.csv", "a") as f:
        f.write("3.0,99,10250,1000.0\n")
    reference.export_run(run, tmp_path / "kept", commit="def456")
    assert json.loads((dest / "provenance.json").read_text())["commit"] == "def456"
    assert runs.load_greedy(dest)[-1, runs.FRAMES] == 10250


def test_score_at_is_the_reports_window():
    data = np.array([[0, 0, f, s] for f, s in ((850, 1.0), (901, 2.0), (950, 4.0),
                                               (1000, 6.0), (1001, 100.0))], np.float64)
    assert reference.score_at(data, 1000) == pytest.approx(4.0)  # (900, 1000]
    assert reference.score_at(data, 1000, min_episodes=4) is None
    assert reference.score_at(data, 1000, reached=990) is None
