"""Tests of bench/offline_table.py: which checkpoint each analysis takes, what `run` skips, and
the table with its H = 10 rule, on fake run folders and fake target_quality results."""

import json
import sys

import pytest

from bench import offline_table


def checkpoint(folder, frames):
    folder.mkdir(parents=True)
    (folder / "counters.json").write_text(json.dumps({"frames": frames, "updates": 4 * frames}))


def fake_run(root, env="Hopper-v5", seed=0, finished=True):
    run = root / env / f"steve_td3_offline.seed{seed}"
    checkpoint(run / "checkpoints" / "policy" / "ckpt-11", 59_000)  # the newest three
    checkpoint(run / "checkpoints" / "policy" / "ckpt-12", 60_000)
    for frames in (18_016, 20_016, 22_016, 40_016, 58_016):
        checkpoint(run / "checkpoints" / "backups" / "policy" / str(4 * frames), frames)
    if finished:
        (run / "state").mkdir()
        (run / "state" / "finished.json").write_text("{}")
    return run


def test_the_nearest_checkpoint_is_a_backup_or_the_newest(tmp_path):
    run = fake_run(tmp_path)
    backups = run / "checkpoints" / "backups" / "policy"
    assert offline_table.nearest_checkpoint(run, 20_000) == backups / str(4 * 20_016)
    assert offline_table.nearest_checkpoint(run, 40_000) == backups / str(4 * 40_016)
    assert offline_table.nearest_checkpoint(run, 60_000) == run  # its newest checkpoint


def test_run_analyses_only_finished_runs_and_skips_what_is_written(tmp_path, monkeypatch):
    fake_run(tmp_path / "runs", "Hopper-v5", 0)
    fake_run(tmp_path / "runs", "HalfCheetah-v5", 0, finished=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "Hopper-v5.seed0.20k.json").write_text("[]")  # written before: not run again
    calls = []

    def fake_subprocess_run(command, stdout, stderr):
        calls.append(command)
        partial = command[command.index("--json") + 1]
        with open(partial, "w") as f:
            f.write("[]")
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(offline_table.subprocess, "run", fake_subprocess_run)
    assert offline_table.run_analyses(tmp_path / "runs", out, wait=False) == 0
    assert [c[2] for c in calls] == [
        str(tmp_path / "runs/Hopper-v5/steve_td3_offline.seed0/checkpoints/backups/policy/160064"),
        str(tmp_path / "runs/Hopper-v5/steve_td3_offline.seed0")]
    assert calls[0][0] == sys.executable and calls[0][3:9] == [
        "--states", "512", "--horizons", "0,1,3,5,10,30", "--seed", "0"]
    assert sorted(p.name for p in out.glob("*.json")) == [
        "Hopper-v5.seed0.20k.json", "Hopper-v5.seed0.40k.json", "Hopper-v5.seed0.60k.json"]
    assert not list(out.glob("*.tmp"))


def result(seed, frames, h10):
    ratios = {0: 1.0, 1: 0.99, 3: 0.95, 5: 0.92, 10: h10, 30: 0.7}
    return [{"run": f"/runs/Hopper-v5/steve_td3_offline.seed{seed}", "env": "Hopper-v5",
             "frames": frames, "oracle": {"candidates": [
                 {"j": j, "gamma_j": 0.99 ** j, "oracle_rmse": 40.0 * r, "oracle_ratio": r,
                  "learned_ratio": 1.0 + (1 - r) if j < 30 else 1.7e16}
                 for j, r in ratios.items()]}}]


@pytest.mark.parametrize("h10, verdict", [(0.80, "runs"), (0.81, "does not run")])
def test_the_table_and_the_h10_rule(tmp_path, capsys, h10, verdict):
    for seed in (0, 1):
        for frames in (20_016, 40_016, 60_000):
            (tmp_path / f"Hopper-v5.seed{seed}.{frames // 1000}k.json").write_text(
                json.dumps(result(seed, frames, h10)))
    assert offline_table.main(["table", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "## Hopper-v5"
    assert "| 1 | 60,000 | 40.0 | 0.990 | 0.950 | 0.920 | " + f"{h10:.3f}" in "\n".join(lines)
    assert "| 0.700 | 1.010 | 1.050 | 1.080 | " in "\n".join(lines)  # the learned side
    assert lines[6].endswith(f" | {2 - h10:.3f} | 1.7e+16 |")  # a run-away rollout
    assert lines[-2] == (f"H = 10 rule: mean oracle RMSE_10 / RMSE_0 over 6 row(s) {h10:.3f} "
                         f"(rule: <= 0.80): steve_td3_oracle_h10 {verdict}.")


def test_a_table_of_nothing_is_one_sentence(tmp_path, capsys):
    assert offline_table.main(["table", str(tmp_path)]) == 2
    assert "holds no analysis (.json); write them with `bench/offline_table.py run` first." \
        in capsys.readouterr().err


def test_the_model_part_table_shows_how_the_parts_add_up(tmp_path, capsys):
    old = result(0, 20_016, 0.9)  # written before the biases: no row in the second table
    new = result(1, 20_016, 0.9)
    for c in new[0]["oracle"]["candidates"]:
        c.update(oracle_bias=-30.0 - c["j"], model_part_bias=12.5 if c["j"] < 30 else 3e16,
                 model_part_median=2.0 + c["j"], model_part_rmse=4e5 if c["j"] == 10 else 1.0,
                 model_value_cos=float("nan") if c["j"] == 0 else 0.1 if c["j"] < 5 else -0.25)
    new[0]["oracle"]["outside"] = {"learned": [0.01 * t for t in range(1, 31)],
                                   "oracle": [0.0] * 30}
    new[0]["oracle"]["far"] = {"learned": [0.001 * t for t in range(1, 31)],
                               "oracle": [0.0] * 30}
    new[0]["oracle"].update(clipped_share=0.7, far_by_start={"clipped": [0.02] * 30,
                                                             "other": [0.005] * 30})
    (tmp_path / "Hopper-v5.seed0.20k.json").write_text(json.dumps(old))
    (tmp_path / "Hopper-v5.seed1.20k.json").write_text(json.dumps(new))
    assert offline_table.main(["table", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "| seed | frames | cos: j = 3 | j = 10 | j = 30 | value bias j = 0 |" in text
    assert "| 1 | 20,016 | 0.10 | -0.25 | -0.25 | -30.0 | 3.0e+16 | 12.0 / 4.0e+05 | 5% / 0% | " \
           "0.5% / 0.0% | 1.0% / 0.0% | 2.0% / 0.5% (70%) |" in text
    assert "| 0 | 20,016 | -" not in text.split("cos: j = 3")[1]  # the old analysis has no row
