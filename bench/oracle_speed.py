"""What an update costs with the simulator as the model, against the learned model's update.

Run: `.venv/bin/python bench/oracle_speed.py [--tasks Hopper-v5,HalfCheetah-v5] [--rounds 5]
[--batch 128]`. Reads the frozen benchmark configs (`config/experiments/benchmark/cpu_win/<task>/
steve_td3.json` and `.../oracle/<task>/steve_td3_oracle.json`); writes nothing.

For each task, in one process on one thread, with a batch of real transitions and their
simulator states (random actions from reset), it times:
- `rollout`: the H = 3 imagined rollout and target grid of one update (ValueRL.value_targets),
  under the learned world model (XLA-compiled, as the learner runs it) and under the simulator
  (learning/oracle.py; a tf.numpy_function, so the update is not XLA-compiled);
- `simulator step`: MujocoOracle.step alone on B states (the C-level batched rollout plus the
  task's observation, reward and termination);
- `policy update`: ValueRL.train_step, learned model and oracle;
- `model update`: WorldModel.train_step (the learned model's own learner; the oracle has none).
The machine is shared, so each workload is timed alternately for `--rounds` rounds of a fixed
count of calls and the fastest round is kept. Printed: milliseconds per call for each, and per
task `oracle_update_cost_ratio` = oracle policy update / (learned policy update + model update),
the per-frame cost ratio of the two configs at equal updates per frame (both learners make 4
updates per frame in cpu_win).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SLUG = {"Hopper-v5": "hopper", "HalfCheetah-v5": "halfcheetah", "Walker2d-v5": "walker2d"}


def real_batch(env_config: dict, size: int, seed: int = 0):
    """`size` real transitions with random actions and their simulator states."""
    import envwrap
    import replay

    env = envwrap.make_env(env_config, seed=seed)
    rng = np.random.default_rng(seed)
    rows = []
    obs = env.reset()
    while len(rows) < size:
        action = rng.uniform(-1, 1, env.action_dims).astype(np.float32)
        state = env.sim_state()
        next_obs, reward, terminal, truncated = env.step(action)
        rows.append((obs, next_obs, action, reward, float(terminal), state, env.sim_state()))
        obs = env.reset() if terminal or truncated else next_obs
    env.close()
    cols = [np.asarray([r[k] for r in rows], np.float32) for k in range(5)]
    return replay.StateBatch(*cols, *(np.asarray([r[k] for r in rows]) for k in (5, 6)))


def best_ms(fn, calls: int, rounds: int) -> float:
    """The fastest of `rounds` rounds of `calls` calls, in ms per call."""
    fn()  # compile / warm up
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return 1000.0 * best


def measure(task: str, batch_size: int, rounds: int, calls: int) -> dict[str, float]:
    import tensorflow as tf

    import config as config_lib
    import valuerl
    import worldmodel
    from learning import oracle as mujoco_oracle

    bench = ROOT / "config/experiments/benchmark"
    learned_cfg = config_lib.load_config(bench / f"cpu_win/{SLUG[task]}/steve_td3.json")
    oracle_cfg = config_lib.load_config(bench / f"oracle/{SLUG[task]}/steve_td3_oracle.json")
    batch = real_batch(learned_cfg["env"], batch_size)
    learned = valuerl.ValueRL(learned_cfg, seed=0)
    model = worldmodel.WorldModel(learned_cfg, seed=0)
    agent = valuerl.ValueRL(oracle_cfg, seed=0)
    oracle = mujoco_oracle.MujocoOracle(oracle_cfg["env"])
    r0, s1, d1 = (tf.constant(v, tf.float32) for v in (batch.reward, batch.next_obs,
                                                       batch.terminal))
    state = tf.constant(batch.next_state, tf.float64)
    learned_targets = tf.function(lambda: learned.value_targets(
        r0, s1, d1, model, learned.draw_members())["y"], jit_compile=True)
    oracle_targets = tf.function(lambda: agent.value_targets(
        r0, s1, d1, oracle, agent.draw_members(), state)["y"])
    actions = np.random.default_rng(1).uniform(-1, 1, batch.action.shape)
    out = {
        "rollout, learned model": best_ms(learned_targets, calls, rounds),
        "rollout, simulator": best_ms(oracle_targets, calls, rounds),
        "simulator step": best_ms(lambda: oracle.step(batch.next_state, actions), calls, rounds),
        "policy update, learned model": best_ms(lambda: learned.train_step(batch, model), calls,
                                                rounds),
        "policy update, simulator": best_ms(lambda: agent.train_step(batch, oracle), calls,
                                            rounds),
        "model update": best_ms(lambda: model.train_step(batch), calls, rounds),
    }
    oracle.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="Hopper-v5,HalfCheetah-v5",
                   help=f"comma-separated, from {', '.join(SLUG)}")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=20, help="calls per round")
    p.add_argument("--batch", type=int, default=128, help="batch size (cpu_win's is 128)")
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in SLUG]
    if unknown:
        p.error(f"no frozen benchmark config for {', '.join(unknown)}; choose from "
                f"{', '.join(SLUG)}")
    import nn

    nn.configure_tensorflow(1)
    for task in tasks:
        ms = measure(task, args.batch, args.rounds, args.calls)
        print(f"## {task}, batch {args.batch}, H = 3, one thread (ms per call, fastest of "
              f"{args.rounds} rounds of {args.calls})")
        for name, value in ms.items():
            print(f"{name:32s} {value:8.2f}")
        ratio = ms["policy update, simulator"] / (ms["policy update, learned model"]
                                                  + ms["model update"])
        print(f"oracle_update_cost_ratio[{task}]={ratio:.2f}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
