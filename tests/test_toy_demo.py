"""Tests of toy_demo.py, the tabular value-expansion demo; files go only under tmp_path."""

import numpy as np
import pytest

import toy_demo

METHOD = {m.name: m for m in toy_demo.METHODS}
CSV_NAMES = ["basic_q", "ensemble_q", "mve_true", "mve_noisy", "steve_true", "steve_noisy"]
FIGURES = ["comparison", "target_errors_true", "target_errors_noisy"]


def true_tables(n_trials: int) -> np.ndarray:
    """Every table of every trial holding the true values, [trials, 8, 102]."""
    return np.tile(toy_demo.true_values(), (n_trials, toy_demo.ENSEMBLE_SIZE, 1))


def test_true_values_and_one_step_targets():
    values = toy_demo.true_values()
    assert values.shape == (102,)
    np.testing.assert_array_equal(values[:101], np.arange(101.0))
    assert values[toy_demo.TERMINAL] == 0.0
    states = np.arange(101)
    targets = toy_demo.true_one_step_targets(states)
    np.testing.assert_array_equal(targets, np.arange(101.0))  # the one-step target of s is s
    assert toy_demo.true_one_step_targets(np.array([100]))[0] == 100.0  # +100 into the terminal
    assert toy_demo.true_one_step_targets(np.array([0]))[0] == 0.0  # -1 + V(1)
    assert toy_demo.REWARD[99] == -1.0 and toy_demo.REWARD[100] == 100.0
    assert toy_demo.NEXT_STATE[100] == toy_demo.TERMINAL
    assert toy_demo.NEXT_STATE[toy_demo.TERMINAL] == toy_demo.TERMINAL


def test_noisy_model_jumps_about_one_step_in_ten_and_keeps_terminal():
    rng = np.random.default_rng(0)
    start = np.full(20_000, 10)
    xs = toy_demo.rollout_states(start, 1, "noisy", rng)  # [n, 2]
    np.testing.assert_array_equal(xs[:, 0], start)
    jumped = xs[:, 1] != 11
    # a jump lands on 11 with probability 1/101, so the visible jump rate is 0.1 * 100/101
    assert 0.09 < jumped.mean() < 0.108
    assert xs[jumped, 1].min() >= 0 and xs[jumped, 1].max() <= 100
    terminal = toy_demo.rollout_states(np.full(1000, toy_demo.TERMINAL), 5, "noisy", rng)
    assert (terminal == toy_demo.TERMINAL).all()
    exact = toy_demo.rollout_states(np.array([97]), 5, "true", rng)
    np.testing.assert_array_equal(exact, [[97, 98, 99, 100, 101, 101]])


def test_steve_weights_are_normalised_inverse_variances():
    samples = np.array([[0.0, 2.0], [0.0, 4.0]])  # variances 1 and 4
    np.testing.assert_allclose(toy_demo.steve_weights(samples), [0.8, 0.2], rtol=1e-7)
    certain = np.array([[5.0, 5.0], [0.0, 2.0]])  # variance 0 and 1: epsilon 1e-8 decides
    weights = toy_demo.steve_weights(certain)
    np.testing.assert_allclose(weights, [1.0 / (1.0 + 1e-8), 1e-8 / (1.0 + 1e-8)], rtol=1e-6)


def test_converged_tables_give_exact_targets_and_zero_errors():
    rng = np.random.default_rng(1)
    tables = true_tables(3)
    states = rng.integers(0, 101, size=(3, 8))
    samples = toy_demo.target_samples(tables, states, 5, "true", 1, rng)
    assert samples.shape == (3, 8, 6, 8)
    np.testing.assert_array_equal(samples, np.broadcast_to(states[..., None, None], samples.shape))
    for name in ("basic_q", "ensemble_q", "mve_true", "steve_true"):
        result = toy_demo.run_method(METHOD[name], 3, 50, np.random.default_rng(2), tables)
        assert result.table_mse.max() < 1e-20, name
        np.testing.assert_allclose(result.final_tables, tables[:, : METHOD[name].n_tables],
                                   atol=1e-10)
    steve = toy_demo.run_method(METHOD["steve_true"], 3, 50, np.random.default_rng(2), tables)
    assert steve.target_errors.shape == (50, 3, 4)
    assert steve.target_errors.max() < 1e-20


def test_steve_keeps_a_converged_table_that_the_noisy_model_pulls_mve_away_from():
    tables = true_tables(2)
    steve = toy_demo.run_method(METHOD["steve_noisy"], 2, 300, np.random.default_rng(3), tables)
    mve = toy_demo.run_method(METHOD["mve_noisy"], 2, 300, np.random.default_rng(3), tables)
    assert steve.target_errors[:, :, 0].max() < 1e-12  # horizon 0 uses only the real transition
    assert steve.table_mse[-1].max() < 1e-6
    assert steve.target_errors[:, :, 2].mean() < 1e-6
    assert steve.target_errors[:, :, 1].mean() > 10.0  # the noisy horizon-5 target is biased
    assert mve.table_mse[-1].min() > 10.0


def test_learned_tables_approach_true_values_with_the_true_model():
    results = toy_demo.run_all(
        n_trials=2, n_steps=5000, seed=0, methods=[METHOD["mve_true"], METHOD["steve_true"]]
    )
    values = toy_demo.true_values()
    for name, result in results.items():
        assert result.table_mse[0].min() > 100.0, name  # random start
        assert result.table_mse[-1].max() < 1e-6, name
        mean_tables = result.final_tables.mean(axis=1)  # [trials, S]
        np.testing.assert_allclose(mean_tables, np.tile(values, (2, 1)), atol=1e-3)
    late = results["steve_true"].target_errors[-100:]
    assert late.max() < 1e-6  # every estimate matches the true one-step target


def test_run_is_deterministic_for_a_seed(tmp_path):
    first = toy_demo.run_all(n_trials=2, n_steps=60, seed=11)
    second = toy_demo.run_all(n_trials=2, n_steps=60, seed=11)
    other = toy_demo.run_all(n_trials=2, n_steps=60, seed=12)
    for name in CSV_NAMES:
        np.testing.assert_array_equal(first[name].table_mse, second[name].table_mse)
        np.testing.assert_array_equal(first[name].final_tables, second[name].final_tables)
        assert not np.array_equal(first[name].table_mse, other[name].table_mse)
    for name in ("steve_true", "steve_noisy"):
        np.testing.assert_array_equal(first[name].target_errors, second[name].target_errors)
    toy_demo.write_csv(tmp_path / "a.csv", first["steve_noisy"].table_mse)
    toy_demo.write_csv(tmp_path / "b.csv", second["steve_noisy"].table_mse)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    # a method's numbers do not depend on which other methods run
    alone = toy_demo.run_all(n_trials=2, n_steps=60, seed=11, methods=[METHOD["mve_noisy"]])
    np.testing.assert_array_equal(alone["mve_noisy"].table_mse, first["mve_noisy"].table_mse)


def test_reduced_run_writes_six_csvs_and_three_figures(tmp_path, capsys):
    out = tmp_path / "nested" / "out"  # missing parents are created
    trials, steps = 3, 40
    code = toy_demo.main(["--out", str(out), "--trials", str(trials), "--steps", str(steps),
                          "--seed", "5"])
    assert code == 0
    assert "wrote 12 files" in capsys.readouterr().out
    folder = out / "Toy-v1"
    expected = {f"{n}.csv" for n in CSV_NAMES}
    expected |= {f"{f}.{ext}" for f in FIGURES for ext in ("png", "pdf")}
    assert {p.name for p in folder.iterdir()} == expected  # no temporary files left
    for name in CSV_NAMES:
        text = (folder / f"{name}.csv").read_text()
        assert not text[0].isalpha()  # headerless, like greedy.csv
        rows = toy_demo.read_csv(folder / f"{name}.csv")
        assert rows.shape == (trials * steps, 4)
        np.testing.assert_array_equal(rows[:, 0], np.repeat(np.arange(1, steps + 1), trials))
        np.testing.assert_array_equal(rows[:, 0], rows[:, 1])
        np.testing.assert_array_equal(rows[:, 0], rows[:, 2])
        assert np.isfinite(rows[:, 3]).all() and (rows[:, 3] >= 0).all()
        assert 100.0 < rows[0, 3] < 5000.0  # random integer tables start far from the truth
    again = tmp_path / "again"
    assert toy_demo.main(["--out", str(again), "--trials", str(trials), "--steps", str(steps),
                          "--seed", "5"]) == 0
    for name in sorted(expected):  # the same seed gives the same bytes, figures included
        assert (folder / name).read_bytes() == (again / "Toy-v1" / name).read_bytes(), name
    for stem in FIGURES:
        png = (folder / f"{stem}.png").read_bytes()
        pdf = (folder / f"{stem}.pdf").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
        assert pdf.startswith(b"%PDF") and len(pdf) > 5_000


def test_csv_rows_match_the_recorded_errors(tmp_path):
    errors = np.array([[1.5, 2.25], [0.125, 0.0]])  # [steps, trials]
    toy_demo.write_csv(tmp_path / "m.csv", errors)
    assert (tmp_path / "m.csv").read_text() == "1,1,1,1.5\n1,1,1,2.25\n2,2,2,0.125\n2,2,2,0\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--trials", "0"], "--trials must be at least 1"),
        (["--steps", "-3"], "--steps must be at least 1"),
        (["--seed", "-1"], "--seed must be 0 or more"),
    ],
)
def test_bad_settings_are_one_clear_sentence(tmp_path, capsys, args, message):
    assert toy_demo.main(["--out", str(tmp_path)] + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "Toy-v1").exists()


def test_output_folder_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "Toy-v1").write_text("not a folder")
    assert toy_demo.main(["--out", str(tmp_path), "--trials", "1", "--steps", "2"]) == 2
    assert "is not a folder" in capsys.readouterr().err
