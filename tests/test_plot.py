"""Tests for plot.py: finding and grouping runs, reading greedy.csv, curves, PNG output, errors.

Fake runs are written under pytest's tmp_path: `<root>/<ENV>/<EXPERIMENT>.seed<S>/log/` with
hps.json and a greedy.csv holding a rising noisy curve.
"""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import plot
from reports import runs

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_run(root, env, experiment, seed, rows, hps_env=True):
    """A fake run folder; `rows` are (hours, epoch, frames, score) lines, None for no file."""
    folder = f"{experiment}.seed{seed}" if seed is not None else experiment
    run = root / env / folder
    (run / "log").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    hps = {"seed": seed, "policy_config": {"algo": "ddpg"}}
    if hps_env:
        hps["env"] = {"name": env, "max_frames": 1000}
    (run / "log" / "hps.json").write_text(json.dumps(hps))
    if rows is not None:
        text = "".join(f"{h},{e},{f},{s}\n" for h, e, f, s in rows)
        (run / "log" / f"{folder}.greedy.csv").write_text(text)
    return run


def rising_rows(seed, slope, checkpoints=8, episodes=2, frame_step=5000):
    """Evaluations at slightly different frame counts per seed, `episodes` per checkpoint."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(1, checkpoints + 1):
        frames = c * frame_step + 137 * seed
        for _ in range(episodes):
            score = slope * frames / 1000 + rng.normal(0.0, 5.0)
            rows.append((round(frames / 20000, 4), c, frames, round(score, 3)))
    return rows


@pytest.fixture
def fake_root(tmp_path):
    """2 algorithms x 2 seeds on one environment."""
    root = tmp_path / "output"
    for seed in (0, 1):
        make_run(root, "Hopper-v5", "steve3", seed, rising_rows(seed, slope=20.0))
        make_run(root, "Hopper-v5", "ddpg0", seed, rising_rows(seed + 10, slope=8.0))
    return root


def assert_png(path, min_bytes=10_000):
    import matplotlib.image

    path = Path(path)
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > min_bytes
    image = matplotlib.image.imread(path)
    return image.shape


# ----------------------------------------------------------------------------- grouping


@pytest.mark.parametrize(
    "name, algo",
    [
        ("steve3", "steve"),
        ("ddpg0", "ddpg"),
        ("mve_tdk1", "mve_tdk"),
        ("speedy_steve1", "speedy_steve"),
        ("steve.seed0", "steve"),
        ("steve3.seed12", "steve"),
        ("mve_tdlambda", "mve_tdlambda"),
        ("ddpg_2", "ddpg"),
        ("42", "42"),
        ("td3", "td3"),
        ("steve_td3.seed100", "steve_td3"),
        ("steve_td3_2", "steve_td3"),
        ("t1_steve_td3_h3", "t1_steve_td3_h3"),
    ],
)
def test_algorithm_label(name, algo):
    assert runs.algorithm_label(name) == algo


def test_group_runs_by_algo_and_experiment(tmp_path):
    root = tmp_path / "out"
    a = make_run(root, "Hopper-v5", "steve3", 0, [])
    b = make_run(root, "Hopper-v5", "steve3", 1, [])
    c = make_run(root, "Hopper-v5", "steve1", None, [])
    d = make_run(root, "folder_name_only", "mve_tdk1", 0, [], hps_env=False)
    e = make_run(root, "walker_folder", "ddpg0", 0, [])  # hps.json names the env
    hps = json.loads((e / "log" / "hps.json").read_text())
    hps["env"]["name"] = "Walker2d-v5"
    (e / "log" / "hps.json").write_text(json.dumps(hps))

    groups = plot.group_runs([a, b, c, d, e])
    assert groups == {
        "Hopper-v5": {"steve": [a, b, c]},
        "Walker2d-v5": {"ddpg": [e]},
        "folder_name_only": {"mve_tdk": [d]},
    }
    by_experiment = plot.group_runs([a, b, c, d], label_by="experiment")
    assert by_experiment["Hopper-v5"] == {"steve1": [c], "steve3": [a, b]}
    with pytest.raises(plot.PlotError, match="label_by"):
        plot.group_runs([a], label_by="seed")


def test_find_runs_root_pattern_and_explicit_run(fake_root, tmp_path):
    runs = plot.find_runs([fake_root])
    names = [r.relative_to(fake_root).as_posix() for r in runs]
    assert names == [
        "Hopper-v5/ddpg0.seed0",
        "Hopper-v5/ddpg0.seed1",
        "Hopper-v5/steve3.seed0",
        "Hopper-v5/steve3.seed1",
    ]
    steve = plot.find_runs([fake_root], pattern="*/steve*")
    assert [r.name for r in steve] == ["steve3.seed0", "steve3.seed1"]
    # an explicit run is taken as is; a repeated one only once
    one = fake_root / "Hopper-v5" / "ddpg0.seed1"
    assert plot.find_runs([one, one]) == [one]
    # too deep: root/a/b/c/d/run is 4 levels below the root
    deep = make_run(tmp_path / "deep" / "a" / "b" / "c", "d", "x", None, [])
    assert deep.exists()
    with pytest.raises(plot.PlotError, match="no run folder"):
        plot.find_runs([tmp_path / "deep"])


def test_find_runs_errors(tmp_path):
    with pytest.raises(plot.PlotError, match="does not exist") as missing:
        plot.find_runs([tmp_path / "nope"])
    assert str(tmp_path / "nope") in str(missing.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(plot.PlotError, match="no run folder") as none:
        plot.find_runs([tmp_path / "empty"], pattern="*steve*")
    assert str(tmp_path / "empty") in str(none.value) and "*steve*" in str(none.value)


# ----------------------------------------------------------------------------- reading


def test_load_greedy_and_partial_last_line(tmp_path):
    run = make_run(tmp_path, "Hopper-v5", "steve", 0, [(0.1, 1, 1000, 5.5), (0.2, 1, 1000, 7.5)])
    csv = run / "log" / "steve.seed0.greedy.csv"
    with csv.open("a") as f:
        f.write("0.3,2,20")  # an evaluator is in the middle of writing this line
    data = runs.load_greedy(run)
    assert data.shape == (2, 4)
    np.testing.assert_allclose(data, [[0.1, 1, 1000, 5.5], [0.2, 1, 1000, 7.5]])
    with csv.open("a") as f:
        f.write("00,9.0\n")  # finished
    np.testing.assert_allclose(runs.load_greedy(run)[-1], [0.3, 2, 2000, 9.0])


def test_load_greedy_never_reads_an_unterminated_last_line(tmp_path):
    """A last line without its newline is being written, even when it already has four fields:
    "0.3,2,2000,12" is "0.3,2,2000,1234.5" cut short, and its score would be wrong."""
    run = make_run(tmp_path, "Hopper-v5", "steve", 0, [(0.1, 1, 1000, 5.5), (0.2, 1, 1000, 7.5)])
    csv = run / "log" / "steve.seed0.greedy.csv"
    with csv.open("a") as f:
        f.write("0.3,2,2000,12")
    np.testing.assert_allclose(runs.load_greedy(run), [[0.1, 1, 1000, 5.5], [0.2, 1, 1000, 7.5]])
    with csv.open("a") as f:
        f.write("34.5\n")
    np.testing.assert_allclose(runs.load_greedy(run)[-1], [0.3, 2, 2000, 1234.5])
    csv.write_text("0.1,1,1000,5.5")  # the only line, still being written
    with pytest.raises(plot.PlotError, match="no evaluations yet"):
        runs.load_greedy(run)


def test_append_greedy_row_ends_every_row_with_a_newline(tmp_path):
    """What load_greedy relies on: the writer's rows end with their newline."""
    from process.rundir import append_greedy_row

    csv = tmp_path / "greedy.csv"
    append_greedy_row(csv, 0.25, 3, 1500, -12.5)
    append_greedy_row(csv, 0.5, 4, 2000, 1234.5)
    assert csv.read_text() == "0.250000,3,1500,-12.500000\n0.500000,4,2000,1234.500000\n"


def test_load_greedy_bad_middle_line(tmp_path):
    run = make_run(tmp_path, "Hopper-v5", "steve", 0, [(0.1, 1, 1000, 5.5)])
    csv = run / "log" / "steve.seed0.greedy.csv"
    csv.write_text("0.1,1,1000,5.5\nhours,epoch\n0.2,2,2000,6\n")
    with pytest.raises(plot.PlotError, match="line 2 of"):
        runs.load_greedy(run)


@pytest.mark.parametrize("rows", [None, []], ids=["absent", "empty"])
def test_load_greedy_no_evaluations(tmp_path, rows):
    run = make_run(tmp_path, "Hopper-v5", "steve", 0, rows)
    with pytest.raises(plot.PlotError, match="no evaluations yet") as error:
        runs.load_greedy(run)
    assert str(run) in str(error.value)
    assert "wait for its first evaluation" in str(error.value)


def test_run_curve_averages_episodes_per_checkpoint():
    data = np.array(
        [
            [0.20, 2, 2000, 30.0],
            [0.10, 1, 1000, 10.0],
            [0.12, 1, 1000, 20.0],
            [0.22, 2, 2000, 50.0],
        ]
    )
    frames, score = plot.run_curve(data, "frames")
    np.testing.assert_allclose(frames, [1000, 2000])
    np.testing.assert_allclose(score, [15.0, 40.0])
    hours, score_h = plot.run_curve(data, "hours")
    np.testing.assert_allclose(hours, [0.11, 0.21])
    np.testing.assert_allclose(score_h, [15.0, 40.0])


def test_summarize_interpolates_only_inside_each_run():
    a = (np.array([0.0, 10.0]), np.array([0.0, 10.0]))
    b = (np.array([5.0, 20.0]), np.array([15.0, 30.0]))
    band = plot.summarize([a, b], band="minmax")
    np.testing.assert_allclose(band.x, [0, 5, 10, 20])
    np.testing.assert_allclose(band.count, [1, 2, 2, 1])
    np.testing.assert_allclose(band.mean, [0, 10, 15, 30])  # at 5: (5+15)/2, at 10: (10+20)/2
    np.testing.assert_allclose(band.low, [0, 5, 10, 30])
    np.testing.assert_allclose(band.high, [0, 15, 20, 30])
    std = plot.summarize([a, b], band="std")
    np.testing.assert_allclose(std.high - std.mean, [0, 5, 5, 0])


# ----------------------------------------------------------------------------- drawing


def test_plot_runs_writes_pngs(fake_root, tmp_path):
    runs = plot.find_runs([fake_root])
    written = plot.plot_runs(runs, tmp_path / "figs" / "curves.png")
    figs = tmp_path / "figs"
    assert written == [str(figs / "curves_frames.png"), str(figs / "curves_hours.png")]
    for path in written:
        height, width, channels = assert_png(path)
        assert (width, height) == (504, 468)  # one panel: 4.2 x 3.9 inches at 120 dpi
        assert channels in (3, 4)
    only = plot.plot_runs(runs, tmp_path / "frames.png", x="frames", band="std")
    assert only == [str(tmp_path / "frames.png")]
    assert_png(only[0])
    assert not list(tmp_path.rglob("*.tmp"))


def test_plot_runs_two_environments_layout(fake_root, tmp_path):
    make_run(fake_root, "Walker2d-v5", "steve1", 0, rising_rows(3, slope=15.0))
    written = plot.plot_runs(plot.find_runs([fake_root]), tmp_path / "two.png", x="hours")
    height, width, _ = assert_png(written[0])
    assert (width, height) == (1008, 468)  # two panels side by side


def test_plot_runs_refuses_run_without_evaluations(fake_root, tmp_path):
    make_run(fake_root, "Hopper-v5", "mve_tdk1", 0, [])
    with pytest.raises(plot.PlotError, match="mve_tdk1.seed0 has no evaluations yet"):
        plot.plot_runs(plot.find_runs([fake_root]), tmp_path / "x.png")
    assert not (tmp_path / "x_frames.png").exists()


# ----------------------------------------------------------------------------- command line


def run_cli(*args, cwd):
    return subprocess.run(
        [str(PYTHON), str(REPO / "plot.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_cli_default_output_next_to_root(fake_root, tmp_path):
    result = run_cli(fake_root, "--pattern", "Hopper-v5/*", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = [str(fake_root / f"learning_curves_{kind}.png") for kind in ("frames", "hours")]
    assert result.stdout.split() == expected
    for path in expected:
        assert_png(path)


def test_cli_errors(fake_root, tmp_path):
    missing = run_cli(tmp_path / "nowhere", cwd=tmp_path)
    assert missing.returncode == 2
    assert "nowhere does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr

    empty = make_run(tmp_path / "other", "Hopper-v5", "steve", 0, None)
    result = run_cli(fake_root / "Hopper-v5" / "steve3.seed0", empty, "--x", "frames", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"plot.py: error: run {empty} has no evaluations yet (log/*.greedy.csv is missing or "
        "empty): wait for its first evaluation episode to finish, or leave the run out."
    ]

    nothing = run_cli(fake_root, "--pattern", "*/sac*", cwd=tmp_path)
    assert nothing.returncode == 2
    assert "no run folder" in nothing.stderr and str(fake_root) in nothing.stderr


def test_single_evaluation_run_and_default_out(tmp_path):
    """A tiny run with one evaluation episode still gives a figure (drawn as a marker)."""
    run = make_run(tmp_path / "output", "Hopper-v5", "steve", 0, [(0.01, 0, 0, 12.5)])
    out = plot.default_out_path([run])
    assert out == tmp_path / "output" / "Hopper-v5" / "learning_curves.png"
    root = tmp_path / "output"
    assert plot.default_out_path([root]) == root / "learning_curves.png"
    written = plot.plot_runs([run], out, x="frames")
    assert written == [str(out)]
    assert_png(out)


def test_output_paths_and_bad_arguments(tmp_path):
    assert plot.output_paths(tmp_path / "a.png", "hours") == {"hours": tmp_path / "a.png"}
    assert plot.output_paths(tmp_path / "a.png", "both") == {
        "frames": tmp_path / "a_frames.png",
        "hours": tmp_path / "a_hours.png",
    }
    with pytest.raises(plot.PlotError, match="must end in .png"):
        plot.output_paths(tmp_path / "a.pdf", "frames")
    with pytest.raises(plot.PlotError, match="x must be one of"):
        plot.output_paths(tmp_path / "a.png", "epochs")
    assert plot._frames_tick(1_500_000) == "1.5M"
    assert plot._frames_tick(200_000) == "200k"
    assert plot._frames_tick(500) == "500"


# ----------------------------------------------------------------------------- issue 17


def test_run_curve_trailing_window_of_frames():
    data = np.array([  # hours, epoch, frames, score: one or two episodes per checkpoint
        [0.1, 1, 1000, 0.0], [0.1, 1, 1000, 100.0],
        [0.2, 2, 2000, 1000.0],
        [0.3, 3, 3000, 0.0],
        [0.4, 4, 4000, 1000.0],
    ])
    frames, raw = plot.run_curve(data, "frames")
    np.testing.assert_allclose(raw, [50.0, 1000.0, 0.0, 1000.0])
    frames, smooth = plot.run_curve(data, "frames", window=1500)
    np.testing.assert_allclose(frames, [1000, 2000, 3000, 4000])
    # episodes with frames in (f - 1500, f]: the window counts episodes, not checkpoints
    np.testing.assert_allclose(smooth, [50.0, 1100.0 / 3, 500.0, 500.0])
    hours, smooth_h = plot.run_curve(data, "hours", window=1500)
    np.testing.assert_allclose(hours, [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(smooth_h, smooth)


@pytest.mark.parametrize("longest, window", [(16000, 500), (18000, 500), (40000, 2000),
                                             (1_000_000, 50_000), (10, 0)])
def test_default_window(longest, window):
    data = np.array([[0.1, 1, longest / 2, 1.0], [0.2, 2, longest, 2.0]])
    assert plot.default_window([data, data[:1]]) == window


def test_header_lines_are_read_in_their_column_order(tmp_path):
    run = make_run(tmp_path, "Hopper-v5", "steve", 0, None)
    csv = run / "log" / "steve.seed0.greedy.csv"
    csv.write_text("hours,epoch,frames,score\n0.1,1,1000,5.5\n"
                   "frames,score,hours,epoch\n2000,7.5,0.2,2\n")
    np.testing.assert_allclose(runs.load_greedy(run), [[0.1, 1, 1000, 5.5], [0.2, 2, 2000, 7.5]])


def draw(run_dirs, kind="hours", smooth=None):
    """The figure plot_runs would draw for `run_dirs`, without writing it."""
    groups = plot.group_runs(run_dirs)
    data = {run: runs.load_greedy(run) for run in run_dirs}
    window = plot.default_window(data.values()) if smooth is None else smooth
    figure = plot._draw(groups, data, kind, "minmax", window)
    figure.canvas.draw()
    return figure


def test_short_runs_have_a_minutes_axis_with_readable_ticks(tmp_path):
    # a 3,000-frame run of 45 seconds: in hours its ticks were 0.0075, 0.0100, 0.0125...
    rows = [(round(k * 0.00125, 5), k, 300 * k, float(k)) for k in range(1, 11)]
    run = make_run(tmp_path, "Hopper-v5", "steve", 0, rows)
    ax = draw([run]).axes[0]
    assert ax.get_xlabel() == "minutes"
    np.testing.assert_allclose(ax.lines[0].get_xdata()[[0, -1]], [0.075, 0.75])
    labels = [t for t in ax.get_xticklabels() if t.get_text() and
              ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.x0)
    assert len(boxes) >= 2
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False))  # no overlap
    long_rows = [(h * 0.5, k, 1000 * k, 1.0) for k, h in enumerate(range(1, 5), start=1)]
    longer = make_run(tmp_path, "Hopper-v5", "ddpg", 0, long_rows)
    assert draw([longer]).axes[0].get_xlabel() == "hours"


def test_titles_say_what_is_drawn(fake_root, tmp_path):
    one = make_run(tmp_path, "Hopper-v5", "steve", 0, rising_rows(0, slope=20.0))
    figure = draw([one], kind="frames")
    title = figure.get_suptitle()
    assert "one run per line" in title and "min-max" not in title
    assert "mean score over the last 2k frames" in title  # 40k frames / 20
    assert not figure.axes[0].collections  # no band for one run
    figure = draw(plot.find_runs([fake_root]), kind="frames", smooth=0)
    title = figure.get_suptitle()
    assert "no smoothing" in title and "shaded: min-max across runs" in title
    assert len(figure.axes[0].collections) == 2  # one band per algorithm of two runs
    lone = make_run(tmp_path, "Hopper-v5", "mve", 0, rising_rows(3, slope=5.0))
    mixed = draw(plot.find_runs([fake_root]) + [lone], kind="frames").get_suptitle()
    assert "(lines of several runs)" in mixed


def test_cli_smooth_option(fake_root, tmp_path):
    result = run_cli(fake_root, "--smooth", "0", "--x", "frames", "--out", tmp_path / "r.png",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_png(tmp_path / "r.png")
    with pytest.raises(plot.PlotError, match="0 or more frames"):
        plot.plot_runs(plot.find_runs([fake_root]), tmp_path / "x.png", smooth=-5)
