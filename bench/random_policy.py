"""The score of a uniformly random policy: the low end of the benchmark's score normalisation.

    .venv/bin/python bench/random_policy.py Hopper-v5 HalfCheetah-v5 [--episodes 100] [--seed 0]

Run by hand; it trains nothing and writes nothing. For each environment it plays `--episodes`
episodes of actions drawn uniformly from the action box (episode i is reset with seed
`--seed` + i and its actions come from one generator seeded with `--seed`), each cut at
1,000 frames as the project's configs cut them (`env.max_frames`), and prints one JSON object:
{ENV: {"mean": x, "std": x, "episodes": n}}. The `cpu_win4` preset of
bench/sample_efficiency.py normalises scores with these means (its comment gives the command).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

MAX_FRAMES = 1000  # env.max_frames of every config/envs/*.json that the benchmarks use


def random_returns(env_id: str, episodes: int, seed: int = 0,
                   max_frames: int = MAX_FRAMES) -> np.ndarray:
    """The returns [episodes] of uniformly random actions in `env_id`."""
    import gymnasium

    env = gymnasium.make(env_id).unwrapped  # no wrapper's time limit: cut at max_frames here
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    returns = np.zeros(episodes)
    try:
        for i in range(episodes):
            env.reset(seed=seed + i)
            for _ in range(max_frames):
                _, reward, terminated, _, _ = env.step(rng.uniform(low, high))
                returns[i] += reward
                if terminated:
                    break
    finally:
        env.close()
    return returns


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="random_policy.py", description=__doc__.split("\n")[0])
    parser.add_argument("envs", nargs="+", metavar="ENV", help="gymnasium ids, e.g. Hopper-v5")
    parser.add_argument("--episodes", type=int, default=100, metavar="N")
    parser.add_argument("--seed", type=int, default=0, metavar="S")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be 1 or more")
    out = {}
    for env_id in args.envs:
        try:
            returns = random_returns(env_id, args.episodes, args.seed)
        except Exception as e:  # gymnasium's own errors: unknown id, missing dependency
            print(f"error: {env_id} cannot be played ({e}); check the environment id.",
                  file=sys.stderr)
            return 2
        out[env_id] = {"mean": round(float(returns.mean()), 2),
                       "std": round(float(returns.std()), 2), "episodes": len(returns)}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
