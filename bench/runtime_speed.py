"""Benchmark: what acting costs beyond the simulator, replay rates, and the master's CPU use.

    .venv/bin/python bench/runtime_speed.py [--seconds S] [--envs Hopper-v5,Humanoid-v5]

For each environment:
- bare: `gymnasium.make(id).unwrapped.step` with random actions, one env, frames/s;
- interactor: the real interactor loop (agent.run_interactor, in a thread of this process)
  with a paper-sized policy checkpoint (4 x 128), `agent_config.batch_size` 8, the exploring
  policy on every step, and every frame appended to an on-disk replay buffer; frames/s.
The ratio interactor/bare is what acting, policy inference and the replay write leave of the
simulator's speed. Then the replay buffer's append rate (batches of 8) and sample rate (batches
of 512 from 100k frames), and the master's own CPU use while it supervises a tiny run.
The last line is `interactor_env_ratio=<the worst ratio>`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402


def bare_fps(env_id: str, seconds: float) -> float:
    import gymnasium

    env = gymnasium.make(env_id).unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    low, high = env.action_space.low, env.action_space.high
    actions = rng.uniform(low, high, size=(4096, *low.shape)).astype(np.float32)
    steps, t_episode = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in actions[:256]:
            _, _, terminated, truncated, _ = env.step(a)
            steps += 1
            t_episode += 1
            if terminated or truncated or t_episode >= 1000:
                env.reset()
                t_episode = 0
    return steps / (time.perf_counter() - start)


def env_config(env_id: str) -> dict:
    import gymnasium

    env = gymnasium.make(env_id)
    obs, act = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    return {"name": env_id, "obs_dims": obs, "action_dims": act, "reward_scale": 1.0,
            "discount": 0.99, "max_frames": 1000}


def interactor_fps(env_id: str, seconds: float, workdir: Path) -> float:
    import config as config_lib
    import valuerl
    from process import checkpoint
    from process.actors import run_interactor
    from process.roles import INTERACTOR, POLICY, ROLE, ProcessSpec
    from process.rundir import Progress, RunDir
    from replay import ReplayBuffer

    config = config_lib.load_config(ROOT / "config/algos/ddpg.json", complete=False)
    config["env"] = env_config(env_id)
    config["agent_config"].update(full_random_n=0, wait_for_learners=False)
    run = RunDir(root=str(workdir / env_id), name="bench")
    run.make_dirs()
    env = config["env"]
    ReplayBuffer.create(run.replay, env["obs_dims"], env["action_dims"], 200_000).close()
    Progress(run.progress_file, create=True)
    agent = valuerl.ValueRL(config, seed=0)
    checkpoint.save_checkpoint(str(run.checkpoint_dir(POLICY)),
                               {ROLE[POLICY].checkpoint_key: agent},
                               {"epoch": 1, "updates": 1, "frames": 0, "hours": 0.0})
    spec = ProcessSpec(role=INTERACTOR, index=0, run=run, config=config, seed=0,
                       cuda_visible_devices="", hours_base=0.0, start_time=time.time(),
                       threads=1)
    stop, finish = threading.Event(), threading.Event()
    worker = threading.Thread(target=run_interactor, args=(spec, stop, finish), daemon=True)
    worker.start()
    replay = None
    while replay is None or replay.count < 2000:  # past start-up and the first policy load
        time.sleep(0.05)
        if replay is None and ReplayBuffer.exists(run.replay):
            replay = ReplayBuffer.open(run.replay)
    t0, f0 = time.perf_counter(), replay.count
    time.sleep(seconds)
    t1, f1 = time.perf_counter(), replay.count
    stop.set()
    worker.join(timeout=30)
    return (f1 - f0) / (t1 - t0)


def replay_rates(workdir: Path, seconds: float) -> tuple[float, float]:
    from replay import ReplayBuffer

    buf = ReplayBuffer.create(workdir / "replay_rates", 11, 3, 120_000, sync=False)
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((8, 11), np.float32)
    act = rng.standard_normal((8, 3), np.float32)
    rew, term = np.ones(8, np.float32), np.zeros(8, np.float32)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        buf.append(obs, obs, act, rew, term)
        n += 8
    append = n / (time.perf_counter() - start)
    while buf.count < 100_000:
        buf.append(obs, obs, act, rew, term)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        buf.sample(512, 100_000, rng)
        n += 1
    sample = n / (time.perf_counter() - start)
    buf.close()
    return append, sample


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def master_cpu(workdir: Path, seconds: float) -> float:
    """The master's CPU use (fraction of one core) while it supervises a tiny DDPG run."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "master.py"),
                             str(ROOT / "tests/configs/tiny_ddpg.json"), "0", "--output-root",
                             str(workdir / "master_cpu")], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(10)  # start-up: the master's own imports and checks
    c0, t0 = _cpu_seconds(proc.pid), time.time()
    time.sleep(seconds)
    c1, t1 = _cpu_seconds(proc.pid), time.time()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    return (c1 - c0) / (t1 - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measurement")
    parser.add_argument("--envs", default="Hopper-v5,Humanoid-v5,InvertedPendulum-v5")
    args = parser.parse_args()
    import nn

    nn.configure_tensorflow(1)
    workdir = Path(tempfile.mkdtemp(prefix="runtime_speed_"))
    ratios = []
    try:
        for env_id in args.envs.split(","):
            bare = bare_fps(env_id, args.seconds)
            acting = interactor_fps(env_id, args.seconds, workdir)
            ratios.append(acting / bare)
            print(f"{env_id:24s} bare env.step {bare:9.0f} frames/s | interactor {acting:9.0f} "
                  f"frames/s | ratio {acting / bare:.2f}", flush=True)
        append, sample = replay_rates(workdir, args.seconds)
        print(f"replay: append {append:,.0f} frames/s (batches of 8, Hopper sizes); sample "
              f"{sample:,.0f} batches of 512/s from 100k frames", flush=True)
        cpu = master_cpu(workdir, args.seconds * 2)
        print(f"master: {100 * cpu:.1f}% of one core while supervising a tiny run", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"interactor_env_ratio={min(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
