"""Tests for envwrap.py and envs/roboschool.py: sizes, action scaling, episode ends, errors.

Runs in the pytest process (plus one short subprocess); writes nothing to disk.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from envwrap import EnvBatch, EnvError, make_env

REPO = Path(__file__).resolve().parents[1]

# id -> (obs_dims, action_dims, action bound): the sizes in docs/platform.md.
SIZES = {
    "Hopper-v5": (11, 3, 1.0),
    "Walker2d-v5": (17, 6, 1.0),
    "HalfCheetah-v5": (17, 6, 1.0),
    "Swimmer-v5": (8, 2, 1.0),
    "Humanoid-v5": (348, 17, 0.4),
    "InvertedPendulum-v5": (4, 1, 3.0),
    "BipedalWalkerHardcore-v3": (24, 4, 1.0),
    "HumanoidBulletEnv-v0": (44, 17, 1.0),
    "HumanoidFlagrunBulletEnv-v0": (44, 17, 1.0),
}
ALL_IDS = list(SIZES)
NEVER_TERMINATE = {"HalfCheetah-v5", "Swimmer-v5"}  # these tasks have no termination condition
MUJOCO_IDS = [n for n in ALL_IDS if n.endswith("-v5")]


def config(name, max_frames=1000, **extra):
    return {"name": name, "max_frames": max_frames, "reward_scale": 1.0, "discount": 0.99, **extra}


def run_random_episode(env, action_seed=7):
    """Random actions in [-1, 1] until the episode ends: returns a list of (reward, d, t)."""
    rng = np.random.default_rng(action_seed)
    env.reset()
    out = []
    while True:
        _, r, d, t = env.step(rng.uniform(-1.0, 1.0, env.action_dims))
        out.append((r, d, t))
        if d or t:
            return out


@pytest.mark.parametrize("path", sorted((REPO / "config" / "envs").glob("*.json")), ids=str)
def test_every_env_config_builds(path):
    section = json.loads(path.read_text())["updates"]["env"]
    env = make_env(section, seed=0)
    assert (env.name, env.obs_dims, env.action_dims, env.max_frames) == (
        section["name"],
        section["obs_dims"],
        section["action_dims"],
        1000,
    )
    assert env.reset().shape == (section["obs_dims"],)
    env.close()


@pytest.mark.parametrize("name", ALL_IDS)
def test_sizes_and_bounds(name):
    obs_dims, action_dims, bound = SIZES[name]
    env = make_env(config(name, obs_dims=obs_dims, action_dims=action_dims), seed=0)
    try:
        assert (env.name, env.obs_dims, env.action_dims, env.max_frames) == (
            name,
            obs_dims,
            action_dims,
            1000,
        )
        np.testing.assert_array_equal(env.action_low, np.full(action_dims, -bound, np.float32))
        np.testing.assert_array_equal(env.action_high, np.full(action_dims, bound, np.float32))
        obs = env.reset()
        assert obs.shape == (obs_dims,) and obs.dtype == np.float32
        next_obs, reward, terminal, truncated = env.step(np.zeros(action_dims))
        assert next_obs.shape == (obs_dims,) and next_obs.dtype == np.float32
        assert type(reward) is float and np.isfinite(reward)
        assert (terminal, truncated) == (False, False)
    finally:
        env.close()


@pytest.mark.parametrize("name", ALL_IDS)
def test_actions_are_clipped_then_scaled_to_bounds(name, monkeypatch):
    _, action_dims, bound = SIZES[name]
    env = make_env(config(name), seed=0)
    seen = []
    real_step = env.gym_env.step

    def spy(action):
        seen.append(np.array(action, dtype=np.float64))
        return real_step(action)

    env.reset()  # before the spy: BipedalWalker's reset() calls its own step() once
    monkeypatch.setattr(env.gym_env, "step", spy)
    mixed = np.linspace(-1.0, 1.0, action_dims)
    for action in (np.ones(action_dims), -np.ones(action_dims), np.zeros(action_dims), mixed):
        env.step(action)
    env.step(np.full(action_dims, 5.0))  # outside [-1, 1]: clipped to 1 before scaling
    env.step(np.full(action_dims, -7.0))
    env.close()
    expected = [
        np.full(action_dims, bound),
        np.full(action_dims, -bound),
        np.zeros(action_dims),
        bound * mixed,
        np.full(action_dims, bound),
        np.full(action_dims, -bound),
    ]
    assert len(seen) == len(expected)
    for got, want in zip(seen, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["InvertedPendulum-v5", "Humanoid-v5"])
def test_mujoco_controls_receive_scaled_action(name):
    _, action_dims, bound = SIZES[name]
    env = make_env(config(name), seed=0)
    env.reset()
    env.step(np.full(action_dims, 0.5))
    np.testing.assert_allclose(env.gym_env.data.ctrl, np.full(action_dims, 0.5 * bound), rtol=1e-6)
    env.close()


@pytest.mark.parametrize("name", ALL_IDS)
def test_truncation_at_max_frames_is_not_terminal_and_reset_restarts(name):
    _, action_dims, _ = SIZES[name]
    env = make_env(config(name, max_frames=5), seed=0)
    for _episode in range(2):
        env.reset()
        flags = [env.step(np.zeros(action_dims))[2:] for _ in range(5)]
        assert flags == [(False, False)] * 4 + [(False, True)]
        assert env.steps == 5
        with pytest.raises(RuntimeError, match="call reset"):
            env.step(np.zeros(action_dims))
    env.close()


@pytest.mark.parametrize("name", sorted(set(ALL_IDS) - NEVER_TERMINATE))
def test_termination_is_terminal_and_reset_restarts(name):
    env = make_env(config(name), seed=3)
    for _episode in range(2):
        steps = run_random_episode(env)
        assert 2 <= len(steps) < 200, f"random actions should end {name} early, got {len(steps)}"
        assert all((d, t) == (False, False) for _, d, t in steps[:-1])
        assert steps[-1][1:] == (True, False)
        with pytest.raises(RuntimeError):
            env.step(np.zeros(env.action_dims))
    env.close()


@pytest.mark.parametrize("name", sorted(NEVER_TERMINATE))
def test_tasks_without_termination_run_exactly_max_frames(name):
    env = make_env(config(name, max_frames=1000), seed=3)
    steps = run_random_episode(env)
    assert len(steps) == 1000
    assert not any(d for _, d, _ in steps)
    assert steps[-1][1:] == (False, True)
    env.close()


def test_termination_on_the_last_allowed_step_stays_terminal():
    n = len(run_random_episode(make_env(config("Hopper-v5"), seed=3)))
    env = make_env(config("Hopper-v5", max_frames=n), seed=3)
    steps = run_random_episode(env)
    assert len(steps) == n
    assert steps[-1][1:] == (True, False)


@pytest.mark.parametrize("max_frames", [1000, 2100])
def test_our_max_frames_wins_over_gymnasium_limit_for_hardcore(max_frames):
    # gymnasium registers BipedalWalkerHardcore-v3 with a 2000-step TimeLimit; ours must decide,
    # below it and above it. A constant action that never falls (found for seed 0).
    import gymnasium

    assert gymnasium.spec("BipedalWalkerHardcore-v3").max_episode_steps == 2000
    env = make_env(config("BipedalWalkerHardcore-v3", max_frames=max_frames), seed=0)
    env.reset()
    action = np.array([-1.0, -1.0, 1.0, -1.0])
    for step in range(1, max_frames + 1):
        _, _, terminal, truncated = env.step(action)
        assert not terminal
        assert truncated == (step == max_frames)
    env.close()


def test_our_max_frames_wins_over_gymnasium_limit_for_mujoco():
    env = make_env(config("HalfCheetah-v5", max_frames=1003), seed=0)  # gymnasium's limit: 1000
    steps = run_random_episode(env)
    assert len(steps) == 1003 and steps[-1][1:] == (False, True)


@pytest.mark.parametrize("name", ["Hopper-v5", "BipedalWalkerHardcore-v3", "HumanoidBulletEnv-v0"])
def test_same_seed_same_episode_other_seed_other_start(name):
    a = make_env(config(name), seed=11)
    b = make_env(config(name), seed=11)
    c = make_env(config(name), seed=12)
    np.testing.assert_array_equal(a.reset(), b.reset())
    assert not np.array_equal(a.reset(), c.reset())  # second reset of a, first of c
    b.reset()  # keep a and b in step: both on their second episode
    rng = np.random.default_rng(0)
    for _ in range(10):
        action = rng.uniform(-1, 1, a.action_dims)
        oa, ra, da, ta = a.step(action)
        ob, rb, db, tb = b.step(action)
        np.testing.assert_array_equal(oa, ob)
        assert (ra, da, ta) == (rb, db, tb)
        if da or ta:
            break
    for env in (a, b, c):
        env.close()


def test_batch_matches_single_envs_and_autoresets():
    n, seed = 3, 5
    batch = EnvBatch(config("Hopper-v5"), n, seed=seed)
    singles = [make_env(config("Hopper-v5"), seed=seed + i) for i in range(n)]
    assert (batch.n, batch.obs_dims, batch.action_dims) == (3, 11, 3)
    obs = batch.reset()
    assert obs.shape == (3, 11) and obs.dtype == np.float32
    for i, env in enumerate(singles):
        np.testing.assert_array_equal(obs[i], env.reset())
    rng = np.random.default_rng(1)
    returns = np.zeros(n)
    lengths = np.zeros(n, dtype=int)
    finished_seen = []
    for _ in range(60):
        actions = rng.uniform(-1, 1, (n, 3))
        out = batch.step(actions)
        assert out.next_obs.shape == (3, 11) and out.obs.shape == (3, 11)
        assert out.reward.dtype == np.float32 and out.terminal.dtype == np.float32
        assert out.truncated.dtype == np.bool_
        ended = {i for i, _, _ in out.finished}
        for i, env in enumerate(singles):
            o2, r, d, t = env.step(actions[i])
            np.testing.assert_array_equal(out.next_obs[i], o2)
            assert out.reward[i] == np.float32(r)
            assert out.terminal[i] == (1.0 if d else 0.0) and out.truncated[i] == t
            returns[i] += out.reward[i]
            lengths[i] += 1
            if d or t:
                assert i in ended
                (ret, length) = [(R, L) for j, R, L in out.finished if j == i][0]
                assert length == lengths[i]
                assert ret == pytest.approx(returns[i], rel=1e-5)
                np.testing.assert_array_equal(out.obs[i], env.reset())
                assert not np.array_equal(out.obs[i], out.next_obs[i])
                finished_seen.append(i)
                returns[i], lengths[i] = 0.0, 0
            else:
                assert i not in ended
                np.testing.assert_array_equal(out.obs[i], out.next_obs[i])
    assert len(finished_seen) >= 3  # random actions end Hopper episodes within ~30 steps
    batch.close()


def test_batch_truncation_at_max_frames():
    batch = EnvBatch(config("Swimmer-v5", max_frames=4), 2, seed=0)
    batch.reset()
    for _ in range(3):
        out = batch.step(np.zeros((2, 2)))
        assert out.finished == [] and not out.truncated.any()
        np.testing.assert_array_equal(out.obs, out.next_obs)
    out = batch.step(np.zeros((2, 2)))
    np.testing.assert_array_equal(out.terminal, np.zeros(2, np.float32))
    np.testing.assert_array_equal(out.truncated, np.ones(2, bool))
    assert [(i, length) for i, _, length in out.finished] == [(0, 4), (1, 4)]
    assert not np.array_equal(out.obs, out.next_obs)  # obs are the reset observations
    assert batch.step(np.zeros((2, 2))).finished == []  # the new episodes run
    batch.close()


def test_batch_refuses_bad_use():
    batch = EnvBatch(config("InvertedPendulum-v5"), 2, seed=0)
    with pytest.raises(RuntimeError, match="reset"):
        batch.step(np.zeros((2, 1)))
    batch.reset()
    with pytest.raises(ValueError, match=r"\(2, 1\)"):
        batch.step(np.zeros((3, 1)))
    with pytest.raises(EnvError):
        EnvBatch(config("InvertedPendulum-v5"), 0)
    batch.close()


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("NoSuchEnv-v0", "cannot make environment id 'NoSuchEnv-v0' (Environment `NoSuchEnv`"),
        ("Hopper-v1", "cannot make environment id 'Hopper-v1' (Environment version v1"),
        ("RoboschoolHumanoid-v1", "'HumanoidBulletEnv-v0'"),
        ("RoboschoolHumanoidFlagrun-v1", "'HumanoidFlagrunBulletEnv-v0'"),
        ("CartPole-v1", "Discrete action space"),
    ],
)
def test_unusable_env_ids_give_clear_errors(name, fragment):
    with pytest.raises(EnvError, match=fragment.replace("(", r"\(")) as info:
        make_env(config(name))
    assert isinstance(info.value, ValueError)
    assert "env.name" in str(info.value) or "continuous" in str(info.value)


@pytest.mark.parametrize(
    "name, key, stated, actual",
    [
        ("Humanoid-v5", "obs_dims", 376, 348),  # the 2018 Humanoid-v1 size
        ("Hopper-v5", "action_dims", 4, 3),
        ("HumanoidBulletEnv-v0", "obs_dims", 45, 44),
    ],
)
def test_size_mismatch_gives_clear_error(name, key, stated, actual):
    with pytest.raises(EnvError) as info:
        make_env(config(name, **{key: stated}))
    assert str(info.value) == (
        f"The config says env.{key} = {stated} but {name} has {actual} "
        f"{'observations' if key == 'obs_dims' else 'action dimensions'}; "
        f"set env.{key} to {actual} in the env config."
    )


@pytest.mark.parametrize("bad", [{"max_frames": 0}, {"max_frames": None}, {"name": ""}])
def test_bad_config_values_give_clear_errors(bad):
    with pytest.raises(EnvError, match="env.max_frames|env.name"):
        make_env({**config("Hopper-v5"), **bad})


def test_bullet_ids_register_lazily_without_leaving_gym_or_printing():
    code = (
        "import sys, gymnasium, envwrap\n"
        "assert 'HumanoidBulletEnv-v0' not in gymnasium.registry\n"
        "assert 'pybullet' not in sys.modules\n"
        "env = envwrap.make_env({'name': 'HumanoidFlagrunBulletEnv-v0', 'max_frames': 9}, seed=1)\n"
        "env.reset(); env.step([0.0] * 17)\n"
        "assert 'HumanoidBulletEnv-v0' in gymnasium.registry\n"
        "assert 'gym' not in sys.modules, 'forwarding gym module left behind'\n"
        "other = gymnasium.make('HumanoidBulletEnv-v0')\n"
        "assert other.spec.max_episode_steps == 1000\n"
        "other.reset(seed=0); other.close(); env.close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""


def test_render_pybullet_and_box2d_without_gl():
    cases = [("HumanoidBulletEnv-v0", (240, 320, 3)), ("BipedalWalkerHardcore-v3", (400, 600, 3))]
    for name, shape in cases:
        env = make_env(config(name), seed=0, render_mode="rgb_array")
        env.reset()
        env.step(np.zeros(env.action_dims))
        frame = env.render()
        assert frame.shape == shape and frame.dtype == np.uint8
        assert frame.min() < frame.max()  # a picture, not a blank
        env.close()


def test_render_mujoco_with_egl():
    # In a fresh process: Mesa's GL and TensorFlow (loaded by other tests) crash when they share
    # one, which is why visualizer.py renders in a TensorFlow-free child process too.
    script = """
import sys
from envwrap import make_env
env = make_env({"name": "Hopper-v5", "max_frames": 1000}, seed=0, render_mode="rgb_array")
env.reset()
try:
    frame = env.render()
except Exception as e:
    print("SKIP", type(e).__name__, e)
    sys.exit(0)
print("FRAME", frame.shape, frame.dtype, int(frame.min() < frame.max()))
"""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if "MUJOCO_GL" not in env and not env.get("DISPLAY"):
        env["MUJOCO_GL"] = "egl"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    if out.stdout.startswith("SKIP"):  # no usable OpenGL here (no EGL/OSMesa, no display)
        pytest.skip(f"MuJoCo cannot render on this machine: {out.stdout.strip()}")
    assert out.stdout.strip() == "FRAME (480, 480, 3) uint8 1"


def test_render_needs_render_mode():
    env = make_env(config("InvertedPendulum-v5"))
    env.reset()
    with pytest.raises(RuntimeError, match="render_mode='rgb_array'"):
        env.render()
    env.close()



def test_batch_of_pybullet_envs_are_independent_simulations():
    batch = EnvBatch(config("HumanoidBulletEnv-v0"), 2, seed=4)
    singles = [make_env(config("HumanoidBulletEnv-v0"), seed=4 + i) for i in range(2)]
    obs = batch.reset()
    for i, env in enumerate(singles):
        np.testing.assert_array_equal(obs[i], env.reset())
    assert not np.array_equal(obs[0], obs[1])
    rng = np.random.default_rng(2)
    for _ in range(8):
        actions = rng.uniform(-1, 1, (2, 17))
        out = batch.step(actions)
        for i, env in enumerate(singles):
            o2, r, d, t = env.step(actions[i])
            np.testing.assert_array_equal(out.next_obs[i], o2)
            assert out.reward[i] == np.float32(r) and out.terminal[i] == float(d)
    for env in [batch, *singles]:
        env.close()
