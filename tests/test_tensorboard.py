"""What a tiny STEVE run leaves in TensorBoard, read back with the tensorboard package's own event
reader, and what its children leave in log/<process>.out.

One run of tests/configs/tiny_steve.json through the real master.py (300 frames, about 20-40 s),
shared by the module; then the tags of every process, the per-episode training points against the
interactor's own count and the replay buffer's terminal flags, the evaluation points against
greedy.csv, STEVE's horizon weights (summing to 1 at every step), the learning rates and the
config text against hps.json.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

import master
from process import preflight
from replay import ReplayBuffer

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

TINY_STEVE = TESTS / "configs/tiny_steve.json"
H = 3  # tiny_steve inherits config/algos/steve.json: rollout_len 3

INTERACTOR_TAGS = {"charts/episodic_return", "charts/episodic_length", "charts/episodes",
                   "charts/frames_per_s"}
EVALUATOR_TAGS = {"eval/episodic_return", "eval/episodic_length", "eval/episodes"}
LEARNER_TAGS = {"charts/updates", "charts/updates_per_s", "charts/updates_per_frame"}
POLICY_TAGS = LEARNER_TAGS | {
    "losses/q", "losses/policy", "charts/mean_q", "charts/mean_target",
    "charts/learning_rate/q", "charts/learning_rate/policy", "charts/average_model_use",
    "steve/horizon_weight", "steve/ensemble_std", "config",
    *(f"steve/horizon_weight/j{j}" for j in range(H + 1)),
    *(f"steve/ensemble_std/j{j}" for j in range(H + 1)),
}
WORLDMODEL_TAGS = LEARNER_TAGS | {"charts/learning_rate/worldmodel", "wm/total",
                                  "wm/transition_loss", "wm/reward_loss", "wm/done_loss"}


def read_events(folder: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """{tag: [(step, value), ...]} of every summary in a TensorBoard run folder, all kept."""
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={
        event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tb")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="0")  # quiet anyway
    done = subprocess.run([sys.executable, str(ROOT / "master.py"), str(TINY_STEVE), "0",
                           "--total-frames", "300", "--output-root", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "InvertedPendulum-v5/tiny_steve"


@pytest.fixture(scope="module")
def events(run):
    return {name: read_events(run / "tensorboard" / name)
            for name in ("policy", "worldmodel", "interactor-0", "evaluator-0")}


def values(points) -> np.ndarray:
    return np.array([np.asarray(v, np.float64) for _, v in points])


@pytest.mark.slow
def test_every_listed_tag_is_there(events):
    assert POLICY_TAGS <= set(events["policy"]), POLICY_TAGS - set(events["policy"])
    assert WORLDMODEL_TAGS <= set(events["worldmodel"])
    assert INTERACTOR_TAGS <= set(events["interactor-0"])
    assert EVALUATOR_TAGS <= set(events["evaluator-0"])
    # the x-axis is frames: every learner point lies within the run's 300 frames, after warm-up
    steps = [step for step, _ in events["policy"]["losses/q"]]
    assert steps == sorted(steps) and 100 <= steps[0] and steps[-1] <= 300


@pytest.mark.slow
def test_one_training_point_per_finished_episode(run, events):
    said = (run / "log/interactor-0.out").read_text()
    count = int(said.split("interactor-0: ")[1].split(" training episodes finished")[0])
    returns = events["interactor-0"]["charts/episodic_return"]
    lengths = events["interactor-0"]["charts/episodic_length"]
    assert len(returns) == len(lengths) == count > 0
    assert values(events["interactor-0"]["charts/episodes"])[-1] == count
    # InvertedPendulum pays 1 per step until the step that ends it (0), and no episode of 300
    # frames reaches the 1000-step time-out, so every episode ends in a terminal frame
    np.testing.assert_array_equal(values(returns), values(lengths) - 1)
    replay = ReplayBuffer.open(run / "replay")
    try:  # every frame of the run, in order (300 < capacity: nothing was overwritten)
        frames = replay._split(replay._gather(np.arange(replay.count)))
    finally:
        replay.close()
    assert len(frames.terminal) == 300 and int(frames.terminal.sum()) == count
    steps = [step for step, _ in returns]
    assert steps == sorted(steps) and steps[-1] <= 300


@pytest.mark.slow
def test_evaluation_points_match_greedy_csv(run, events):
    rows = [line.split(",") for line in
            (run / "log/tiny_steve.greedy.csv").read_text().splitlines()]
    evaluator = events["evaluator-0"]
    assert len(evaluator["eval/episodic_return"]) == len(rows) > 0
    np.testing.assert_allclose(values(evaluator["eval/episodic_return"]),
                               [float(r[3]) for r in rows], atol=1e-4)
    assert [step for step, _ in evaluator["eval/episodic_return"]] == [int(r[2]) for r in rows]
    assert list(values(evaluator["eval/episodes"])) == list(range(1, len(rows) + 1))
    np.testing.assert_array_equal(values(evaluator["eval/episodic_length"]),
                                  values(evaluator["eval/episodic_return"]) + 1)


@pytest.mark.slow
def test_steve_horizon_weights_sum_to_one_at_every_step(events):
    policy = events["policy"]
    weights = np.stack([values(policy[f"steve/horizon_weight/j{j}"]) for j in range(H + 1)], 1)
    assert len(weights) >= 2
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    assert (weights >= 0).all()
    np.testing.assert_allclose(values(policy["charts/average_model_use"]), 1.0 - weights[:, 0],
                               atol=1e-5)
    std = np.stack([values(policy[f"steve/ensemble_std/j{j}"]) for j in range(H + 1)], 1)
    assert (std >= 0).all() and std.shape == weights.shape
    # the histogram holds the same weights, bucket j from j - 0.5 to j + 0.5
    for (_, buckets), row in zip(policy["steve/horizon_weight"], weights, strict=True):
        np.testing.assert_allclose(buckets[:, 0], np.arange(H + 1) - 0.5)
        np.testing.assert_allclose(buckets[:, 2], row, atol=1e-6)


@pytest.mark.slow
def test_learning_rates_and_config_text(run, events):
    hps = json.loads((run / "log/hps.json").read_text())
    policy = events["policy"]
    lr = hps["policy_config"]["learning_rate"]
    assert values(policy["charts/learning_rate/q"]) == pytest.approx(lr)
    assert values(policy["charts/learning_rate/policy"]) == pytest.approx(lr)
    assert values(events["worldmodel"]["charts/learning_rate/worldmodel"]) == pytest.approx(
        hps["model_config"]["learning_rate"])
    [(_, text)] = policy["config"]
    text = text.item().decode()
    assert text.startswith("```json\n") and json.loads(text[8:-4]) == hps


@pytest.mark.slow
def test_children_out_files_hold_no_tensorflow_start_up_lines(run):
    outs = sorted((run / "log").glob("*.out"))
    assert [p.name for p in outs] == ["evaluator-0.out", "interactor-0.out",
                                      "policy-learner.out", "worldmodel-learner.out"]
    for path in outs:
        text = path.read_text()
        for noise in ("cuInit", "E0000", "I0000", "W0000", "absl::InitializeLog", "UserWarning"):
            assert noise not in text, f"{path.name}: {text}"
        assert text.startswith(f"{path.stem} (pid ")


def test_quiet_import_drops_start_up_lines_and_keeps_the_rest(tmp_path):
    # A stand-in `tensorflow` that writes, while it loads, what TensorFlow writes plus a line
    # that matters (straight to file descriptor 2, as C++ code does).
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import os\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are '\n"
        "            b'written to STDERR\\n'\n"
        "            b'I0000 00:00:1796047663.168072    3465 port.cc:153] oneDNN custom '\n"
        "            b'operations are on.\\n'\n"
        "            b'a real problem\\n')\n")
    code = ("import os; from process import runtime; runtime.import_tensorflow(); "
            "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake.parent), str(ROOT)]))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "3\n" and done.stderr == "a real problem\n"
    loud = subprocess.run([sys.executable, "-c", code.replace("()", "(verbose=True)")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=dict(env, TF_CPP_MIN_LOG_LEVEL="0"))
    assert loud.stdout == "0\n" and "I0000" in loud.stderr and "a real problem" in loud.stderr


@pytest.mark.slow
def test_real_tensorflow_starts_quietly_and_without_keras():
    # without Keras (runtime._import_tensorflow_without_keras): not imported, the variable that
    # left it out gone again, and tf.keras still Keras 3 for whoever uses it
    code = ("import os, sys; from process import runtime; tf = runtime.import_tensorflow(); "
            "tf.config.list_physical_devices(); print(float(tf.constant(2.0) + 1)); "
            "print('keras' in sys.modules, 'matplotlib' in sys.modules, "
            "'TF_USE_LEGACY_KERAS' in os.environ); "
            "print(tf.keras.layers.Dense(3)(tf.ones((1, 2))).shape, 'keras' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TF_USE_LEGACY_KERAS", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "3.0\nFalse False False\n(1, 3) True\n" and done.stderr == ""


def test_verbose_flag_reaches_every_child():
    plan = preflight.Plan(config={"agent_config": {"count": 1}, "evaluator_config": {"count": 1}},
                          run=None, seed=0, experiment="c", devices=("", ""), device_note="",
                          model_based=False)
    quiet = master.make_specs(plan, master.parse_args(["c.json", "0"]))
    loud = master.make_specs(plan, master.parse_args(["c.json", "0", "--verbose"]))
    assert [s.verbose for s in quiet] == [False] * 3 and [s.verbose for s in loud] == [True] * 3


@pytest.mark.slow
def test_tensorboard_png_draws_the_run(run, tmp_path):
    out = tmp_path / "board.png"
    done = subprocess.run([sys.executable, str(ROOT / "scripts/tensorboard_png.py"), str(run),
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout == f"{out}\n"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert not list(tmp_path.glob(".*tmp"))
    bad = subprocess.run([sys.executable, str(ROOT / "scripts/tensorboard_png.py"),
                          str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr == f"error: {tmp_path} has no tensorboard/ folder; give a run folder " \
                         f"made by master.py.\n"
