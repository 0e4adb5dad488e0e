"""Tests of bench/posture.py: the torso angle of greedy episodes on HalfCheetah-v5 (upright and
on its back, set by hand instead of training a policy), the table, and the errors a user meets."""

import json
import math

import numpy as np
import pytest

import config as config_lib
import envwrap
import valuerl
from bench import posture
from process import checkpoint

CHEETAH = {"name": "HalfCheetah-v5", "obs_dims": 17, "action_dims": 6, "max_frames": 60}


def still(obs):
    return np.zeros((obs.shape[0], 6), np.float32)


def test_an_upright_cheetah_is_never_upside_down():
    env = envwrap.make_env(CHEETAH, seed=0)
    try:
        [p] = posture.greedy_postures(env, still, episodes=1)
    finally:
        env.close()
    assert p.length == 60 and p.upside_down == 0.0
    assert p.largest_angle < math.radians(30)


def test_a_cheetah_on_its_back_is_counted_and_printed():
    def on_its_back(sim):
        qpos, qvel = sim.data.qpos.copy(), sim.data.qvel.copy()
        qpos[posture.torso_address(sim)] = math.pi
        qpos[1] += 0.5  # lifted, so it lands on its back rather than inside the floor
        sim.set_state(qpos, qvel)

    env = envwrap.make_env(CHEETAH, seed=0)
    try:
        postures = posture.greedy_postures(env, still, episodes=2, start=on_its_back)
    finally:
        env.close()
    assert [p.length for p in postures] == [60, 60]
    assert all(p.upside_down == 1.0 for p in postures)  # an idle cheetah cannot turn back over
    assert all(abs(p.final_angle) > math.pi / 2 for p in postures)
    table = posture.format_postures("runs/cheetah", postures)
    assert table.splitlines()[0] == "## runs/cheetah"
    assert "| 0 | " in table and "| 60 | 100% | " in table


def test_clear_errors(tmp_path, capsys):
    env = envwrap.make_env({"name": "InvertedPendulum-v5", "obs_dims": 4, "action_dims": 1,
                            "max_frames": 10}, seed=0)
    try:
        with pytest.raises(posture.PostureError, match="no torso hinge joint named 'rooty'"):
            posture.greedy_postures(env, lambda obs: np.zeros((1, 1)), episodes=1)
    finally:
        env.close()
    assert posture.main([str(tmp_path)]) == 2
    assert "is not a run folder or a checkpoint inside one" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        posture.parse_args([str(tmp_path), "--episodes", "0"])


def test_main_reads_a_run_folder_and_prints_its_table(tmp_path, capsys):
    # a run folder as master.py leaves it (log/hps.json and a policy checkpoint) of an untrained
    # tiny DDPG on HalfCheetah-v5: main goes through the same loading as target_quality
    config = config_lib.load_config("tests/configs/tiny_ddpg.json")
    config["env"].update(CHEETAH)
    config["seed"] = 3
    run = tmp_path / "cheetah_run"
    (run / "log").mkdir(parents=True)
    (run / "log" / "hps.json").write_text(json.dumps(config))
    agent = valuerl.ValueRL(config, seed=3, jit_compile=False)
    checkpoint.save_checkpoint(str(run / "checkpoints" / "policy"), {"valuerl": agent},
                               {"epoch": 1, "updates": 10, "frames": 100, "hours": 0.0})
    assert posture.main([str(run), "--episodes", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"## {run}"
    rows = [line for line in lines if line.startswith("| 0 |") or line.startswith("| 1 |")]
    assert len(rows) == 2 and all("| 60 | " in row for row in rows)  # the config's 60 frames
    # --summary: one table, one row per run
    assert posture.main([str(run), str(run), "--episodes", "2", "--summary"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == posture.SUMMARY_HEAD and len(lines) == 4
    assert lines[2] == lines[3] and lines[2].startswith("| cheetah_run | ")
    assert lines[2].endswith(" | 0% |")  # an untrained cheetah stays upright for 60 frames
    back = [posture.Posture(ret=-3.0, length=60, upside_down=u, largest_angle=3.0,
                            final_angle=3.0) for u in (0.98, 0.991, 0.99)]
    assert posture.summary_row("r/td3.seed4", back) == "| td3.seed4 | -3, -3, -3 | 98-99% |"
