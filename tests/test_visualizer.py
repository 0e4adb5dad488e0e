"""visualizer.py on checkpoints of two tiny runs (STEVE and DDPG on InvertedPendulum-v5).

The runs are made once for the module by master.py (both at once, about 40-60 s); the rest
checks what the visualizer prints, in both forms of its command line (RUN_DIR, and the 2018
CONFIG GPU CHECKPOINT_DIR), the mp4 it writes (frames counted with imageio's reader),
--no-render without PyOpenGL, the GL backend choice, and the one-sentence errors.
"""

import ctypes.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest

import visualizer
from process import render

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
TINY_STEVE = TESTS / "configs/tiny_steve.json"
TINY_DDPG = TESTS / "configs/tiny_ddpg.json"
EPISODE_RE = re.compile(r"^episode (\d+): length (\d+), return (-?[\d.]+) \((terminal|cut at "
                        r"max frames)\)$", re.M)


def child_env(**extra) -> dict:
    env = dict(os.environ, **{"TF_CPP_MIN_LOG_LEVEL": "2", **extra})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra.get("PYTHONPATH"), str(ROOT)) if p)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders of a 300-frame tiny STEVE run and a 300-frame tiny DDPG run."""
    out = tmp_path_factory.mktemp("runs")
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(ROOT / "master.py"), str(config), "0", "--total-frames", "300",
             "--output-root", str(out)],
            cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        for name, config in (("steve", TINY_STEVE), ("ddpg", TINY_DDPG))
    }
    for name, proc in procs.items():
        text, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"tiny {name} run failed:\n{text}"
    return {"steve": out / "InvertedPendulum-v5/tiny_steve",
            "ddpg": out / "InvertedPendulum-v5/tiny_ddpg"}


def episodes_of(text: str) -> list[tuple[int, float, str]]:
    return [(int(m[2]), float(m[3]), m[4]) for m in EPISODE_RE.finditer(text)]


def check_returns(episodes) -> None:
    # InvertedPendulum-v5 pays 1 per step while the pole is up and 0 on the step that ends it.
    for length, ret, end in episodes:
        assert ret == (length - 1 if end == "terminal" else length)


def histogram_blocks(text: str) -> dict[int, tuple[float, list[int]]]:
    """j -> (printed mean, the 10 bin counts) from the STEVE weight histograms."""
    blocks: dict[int, tuple[float, list[int]]] = {}
    current = None
    for line in text.splitlines():
        head = re.match(r"^  j = (\d+) \(.*\): mean ([\d.]+),", line)
        if head:
            current = int(head[1])
            blocks[current] = (float(head[2]), [])
            continue
        row = re.match(r"^    \[[\d.]+, [\d.]+[)\]] #* *(\d+) \( *[\d.]+%\)$", line)
        if row and current is not None:
            blocks[current][1].append(int(row[1]))
    return blocks


def frame_count(path: Path) -> int:
    reader = imageio.get_reader(str(path), format="FFMPEG")
    try:
        return reader.count_frames()
    finally:
        reader.close()


def one_sentence_error(capsys, argv) -> str:
    assert visualizer.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("error: ") and err.endswith("."), err
    return err


# ------------------------------------------------------------------------------ real runs


@pytest.mark.slow
def test_steve_prints_returns_writes_mp4_and_weight_histograms(runs, tmp_path, capsys):
    video = tmp_path / "out" / "steve.mp4"
    code = visualizer.main([str(TINY_STEVE), "0", str(runs["steve"] / "checkpoints"),
                            "--episodes", "2", "--max-frames", "12", "--video", str(video)])
    text = capsys.readouterr().out
    assert code == 0, text
    episodes = episodes_of(text)
    assert len(episodes) == 2
    assert all(1 <= length <= 12 for length, _, _ in episodes)
    check_returns(episodes)
    steps = sum(length for length, _, _ in episodes)
    mean_return = np.mean([ret for _, ret, _ in episodes])
    assert f"mean over 2 episodes: length {steps / 2:.1f}, return {mean_return:.3f}" in text
    assert "checkpoints/policy/ckpt-" in text and "checkpoints/worldmodel/ckpt-" in text

    assert video.stat().st_size > 1000
    assert frame_count(video) == steps
    assert f"video: {video} ({steps} frames for {steps} steps, 480x480" in text
    assert not [p for p in video.parent.iterdir() if p.name.startswith(".")]  # no temp files

    assert f"STEVE weights w[0, j] over {steps} visited states (H = 3)" in text
    blocks = histogram_blocks(text)
    assert sorted(blocks) == [0, 1, 2, 3]
    for _, counts in blocks.values():
        assert len(counts) == visualizer.HISTOGRAM_BINS and sum(counts) == steps
    means = [blocks[j][0] for j in range(4)]
    assert sum(means) == pytest.approx(1.0, abs=0.003)  # each row of w sums to 1
    model_use = float(re.search(r"average model use \(1 - mean w\[0, 0\]\): ([\d.]+)", text)[1])
    assert model_use == pytest.approx(1.0 - means[0], abs=0.002)


@pytest.mark.slow
def test_backup_folder_and_default_video_path(runs, capsys):
    backup = runs["steve"] / "checkpoints/backups/policy/100"
    code = visualizer.main([str(TINY_STEVE), "0", str(backup), "--episodes", "1",
                            "--max-frames", "4"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert f"policy      {backup} (" in text and "100 updates" in text
    # the world-model backup with the most frames not beyond the policy backup's
    assert "world model " + str(runs["steve"] / "checkpoints/backups/worldmodel") in text
    episodes = episodes_of(text)
    assert [length for length, _, _ in episodes] == [4]
    video = runs["steve"] / "videos/tiny_steve.updates100.mp4"
    assert f"video: {video} (4 frames" in text
    assert frame_count(video) == 4


@pytest.mark.slow
def test_run_dir_form_prints_a_return_quietly(runs):
    done = subprocess.run(
        [sys.executable, str(ROOT / "visualizer.py"), str(runs["steve"]), "--no-render",
         "--episodes", "1", "--max-frames", "30"],
        cwd=ROOT, env=child_env(TF_CPP_MIN_LOG_LEVEL="0"), capture_output=True, text=True,
        timeout=180)
    assert done.returncode == 0, done.stderr
    episodes = episodes_of(done.stdout)
    assert len(episodes) == 1
    check_returns(episodes)
    hps = runs["steve"] / "log/hps.json"
    assert done.stdout.startswith(f"{hps}: InvertedPendulum-v5, STEVE (H = 3)")
    assert "checkpoints/policy/ckpt-" in done.stdout and "STEVE weights w[0, j]" in done.stdout
    for noise in ("cuInit", "I0000", "E0000", "absl::InitializeLog"):
        assert noise not in done.stderr, done.stderr


@pytest.mark.slow
def test_run_dir_form_with_a_backup(runs, capsys):
    code = visualizer.main([str(runs["steve"]), "--backup", "100", "--no-render",
                            "--episodes", "1", "--max-frames", "3"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert f"policy      {runs['steve'] / 'checkpoints/backups/policy/100'} (" in text
    assert "world model " + str(runs["steve"] / "checkpoints/backups/worldmodel") in text
    # a folder inside the run names the run as well
    inside = runs["ddpg"] / "checkpoints/backups/policy/100"
    assert visualizer.main([str(inside), "--no-render", "--episodes", "1",
                            "--max-frames", "3"]) == 0
    text = capsys.readouterr().out
    assert f"policy      {inside} (" in text and "model-free (DDPG)" in text
    err = one_sentence_error(capsys, [runs["steve"], "--backup", "150", "--no-render"])
    assert "no policy backup of 150 updates (it has backups of 100, 200 updates)" in err


def test_a_folder_that_is_not_a_run_is_one_sentence_before_tensorflow(tmp_path):
    code = ("import sys, visualizer; code = visualizer.main(sys.argv[1:]); "
            "print('tensorflow' in sys.modules, code)")
    for folder, says in ((tmp_path, "is not a run folder"), (tmp_path / "nope", "does not exist")):
        done = subprocess.run([sys.executable, "-c", code, str(folder), "--no-render"],
                              cwd=ROOT, env=child_env(), capture_output=True, text=True,
                              timeout=120)
        assert done.stdout == "False 2\n", done.stderr  # answered without loading TensorFlow
        err = done.stderr.strip()
        assert "\n" not in err and err.startswith(f"error: {folder} {says}"), err
        assert err.endswith("or use the form CONFIG GPU CHECKPOINT_DIR.") or \
            err.endswith("output/<ENV>/<EXPERIMENT>."), err


def test_the_two_forms_of_the_command_line():
    args = visualizer.parse_args(["out/run", "--backup", "300", "--gpu", "1"])
    assert (args.run_dir, args.config, args.gpu, args.backup) == ("out/run", None, 1, 300)
    args = visualizer.parse_args(["c.json", "2", "out/run/checkpoints"])
    assert (args.run_dir, args.config, args.gpu, args.checkpoint_dir) == \
        (None, "c.json", 2, "out/run/checkpoints")
    for bad in (["a", "b"], ["c.json", "x", "d"], ["c.json", "0", "d", "--backup", "5"],
                ["c.json", "0", "d", "--gpu", "1"]):
        with pytest.raises(SystemExit):
            visualizer.parse_args(bad)


@pytest.fixture()
def no_opengl(tmp_path) -> dict:
    """An environment for child processes in which PyOpenGL cannot be imported."""
    blocker = tmp_path / "blocker" / "OpenGL"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        'raise ImportError("OpenGL is blocked by test_visualizer")\n')
    env = child_env(PYTHONPATH=str(blocker.parent))
    env.pop("MUJOCO_GL", None)
    env.pop("PYOPENGL_PLATFORM", None)
    return env


@pytest.mark.slow
def test_no_render_needs_no_gl_and_model_free_has_no_weights(runs, no_opengl):
    no_opengl["MUJOCO_GL"] = "egl"  # what envwrap would choose; must stay unused
    done = subprocess.run(
        [sys.executable, str(ROOT / "visualizer.py"), str(TINY_DDPG), "0",
         str(runs["ddpg"] / "checkpoints"), "--episodes", "2", "--max-frames", "20",
         "--no-render"],
        cwd=ROOT, env=no_opengl, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    episodes = episodes_of(done.stdout)
    assert len(episodes) == 2
    check_returns(episodes)
    assert "video:" not in done.stdout
    assert "there are no STEVE weights" in done.stdout
    assert not (runs["ddpg"] / "videos").exists()


@pytest.mark.slow
def test_rendering_impossible_says_what_to_install(runs, no_opengl):
    done = subprocess.run(
        [sys.executable, str(ROOT / "visualizer.py"), str(TINY_STEVE), "0",
         str(runs["steve"] / "checkpoints"), "--episodes", "1"],
        cwd=ROOT, env=no_opengl, capture_output=True, text=True, timeout=180)
    assert done.returncode == 2
    err = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(err) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "MUJOCO_GL=egl failed" in err[0] and "MUJOCO_GL=osmesa failed" in err[0]
    assert "libosmesa6" in err[0] and "libegl1" in err[0] and "--no-render" in err[0]


# ------------------------------------------------------------------------------ errors


def test_missing_folder(capsys, tmp_path):
    err = one_sentence_error(capsys, [TINY_STEVE, 0, tmp_path / "nope"])
    assert "does not exist" in err and "checkpoints/" in err


def test_folder_without_checkpoint(capsys, tmp_path):
    err = one_sentence_error(capsys, [TINY_STEVE, 0, tmp_path])
    assert "holds no STEVE checkpoint" in err
    (tmp_path / "policy").mkdir()
    err = one_sentence_error(capsys, [TINY_STEVE, 0, tmp_path])
    assert "holds no complete checkpoint yet" in err


@pytest.mark.slow
def test_checkpoint_of_another_config(runs, capsys, tmp_path):
    other = tmp_path / "deeper.json"
    other.write_text(json.dumps({"inherits": [str(TINY_STEVE)],
                                 "updates": {"policy_config": {"hidden_layers": 2}}}))
    err = one_sentence_error(capsys, [other, 0, runs["steve"] / "checkpoints", "--no-render"])
    assert "other shapes" in err and "the config that wrote it differs" in err


@pytest.mark.slow
def test_model_free_run_with_model_based_config(runs, capsys):
    err = one_sentence_error(capsys, [TINY_STEVE, 0, runs["ddpg"] / "checkpoints",
                                      "--no-render"])
    assert "model-free run" in err and str(TINY_STEVE) in err


def test_gpu_that_does_not_exist(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    err = one_sentence_error(capsys, [TINY_STEVE, 5, tmp_path])
    assert "GPU 5" in err
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # main() restores what it changed


def test_contradicting_options():
    with pytest.raises(SystemExit):
        visualizer.parse_args([str(TINY_STEVE), "0", "x", "--no-render", "--video", "v.mp4"])


# ------------------------------------------------------------------------------ GL backends


def test_egl_failure_falls_back_to_osmesa():
    tried = []

    def probe(backend):
        tried.append(backend)
        return "no EGL display" if backend == "egl" else None

    assert render.choose_mujoco_gl(None, probe) == "osmesa"
    assert tried == ["egl", "osmesa"]


def test_preset_backend_is_the_only_one_tried():
    tried = []

    def probe(backend):
        tried.append(backend)
        return "cannot open display"

    with pytest.raises(visualizer.VisualizerError, match="MUJOCO_GL=glfw failed") as info:
        render.choose_mujoco_gl("glfw", probe)
    assert tried == ["glfw"] and "--no-render" in str(info.value)


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is None,
                    reason="libosmesa6 is not installed")
def test_osmesa_probe_renders():
    assert render.probe_mujoco_gl("osmesa") is None


def test_probe_reports_a_broken_backend(no_opengl):
    reason = render.probe_mujoco_gl("egl", env=no_opengl)
    assert reason is not None and "OpenGL is blocked" in reason


# ------------------------------------------------------------------------------ formatting


def test_weight_histogram_counts():
    w = np.array([[0.05, 0.95], [0.15, 0.85], [0.15, 0.85], [1.0, 0.0]])  # [states, H+1]
    blocks = histogram_blocks(visualizer.format_weights(w, {"steve_reweight": True}))
    assert blocks[0] == (pytest.approx(0.3375, abs=1e-3), [1, 2, 0, 0, 0, 0, 0, 0, 0, 1])
    assert blocks[1][1] == [1, 0, 0, 0, 0, 0, 0, 0, 2, 1]


def test_fixed_reduction_weights_are_printed_once():
    w = np.tile([0.0, 0.0, 1.0], (5, 1))
    text = visualizer.format_weights(w, {"rollout_len": 2})
    assert "does not reweight by state (MVE: all weight on j = H)" in text
    assert "[0.000, 0.000, 1.000] at every one of the 5 visited states" in text
    td0 = visualizer.format_weights(np.tile([1.0, 0.0, 0.0], (5, 1)),
                                    {"rollout_len": 2, "lambda_return": 0})
    assert "(MVE with a TD(lambda = 0) mix)" in td0  # 0 is TD(0), not "off"
    off = visualizer.format_weights(w, {"rollout_len": 2, "lambda_return": False})
    assert "(MVE: all weight on j = H)" in off


@pytest.mark.slow
def test_a_crashed_render_process_is_one_sentence_and_leaves_no_file(tmp_path):
    video = tmp_path / "crash.mp4"
    env = visualizer.RenderedEnv({"name": "InvertedPendulum-v5", "max_frames": 10}, 0, video,
                                 None, "egl")
    try:
        env.reset()
        assert render._temporary_video(video, env._process.pid).exists()
        os.kill(env._process.pid, signal.SIGKILL)
        with pytest.raises(visualizer.VisualizerError, match="was killed by signal 9.*"
                           "--no-render"):
            env.step(np.zeros(1, np.float32))
    finally:
        env.close()
    assert list(tmp_path.iterdir()) == []
