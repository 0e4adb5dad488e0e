"""Is a trained run's policy moving on its back? The torso angle of its greedy episodes.

Run: `.venv/bin/python bench/posture.py RUN_DIR [RUN_DIR ...] [--episodes 3] [--seed 123]
[--summary]`. RUN_DIR is a run folder (its newest policy checkpoint) or a checkpoint folder
inside one, as for bench/target_quality.py. Writes nothing. `--summary` prints one table with a
row per run (its returns and its share of steps upside down) instead of a table per run.

For the planar MuJoCo locomotion tasks (HalfCheetah, Hopper, Walker2d: a torso hinge joint named
`rooty`), each greedy episode's return, its length and the share of its steps with the torso
turned more than 90 degrees from upright. HalfCheetah-v5 does not end an episode when the
cheetah falls on its back, and a policy can learn to push itself along on its back: a known
poor local optimum that scores a few hundred where upright running scores thousands. Hopper and
Walker2d end their episodes long before 90 degrees, so there the share is 0 and the angle is
still worth a look (the largest angle is printed too).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class PostureError(Exception):
    """A run or environment this diagnostic cannot look at; the message says why and what to do."""


@dataclasses.dataclass
class Posture:
    """One greedy episode: its return, length, and torso angles in radians."""

    ret: float
    length: int
    upside_down: float  # share of steps with |torso angle| > pi / 2
    largest_angle: float  # the largest |torso angle| of the episode
    final_angle: float


def torso_address(sim) -> int:
    """The qpos index of the torso's hinge (`rooty`) of a gymnasium MuJoCo env's simulator."""
    try:
        return int(sim.model.joint("rooty").qposadr[0])
    except (KeyError, AttributeError):
        raise PostureError(
            f"{type(sim).__name__} has no torso hinge joint named 'rooty'; this diagnostic is for "
            "the planar locomotion tasks (HalfCheetah, Hopper, Walker2d)."
        ) from None


def greedy_postures(env, act: Callable[[np.ndarray], np.ndarray], episodes: int,
                    start: Callable[[object], None] | None = None) -> list[Posture]:
    """`episodes` greedy episodes of `act` (obs [1, obs] -> action [1, act] in [-1, 1]) on the
    envwrap.Env `env`, to its time limit or termination; `start(sim)` (tests) may change the
    simulator's state after each reset, before the first action."""
    sim = env.gym_env.unwrapped
    k = torso_address(sim)
    out = []
    for _ in range(episodes):
        obs = env.reset()
        if start is not None:
            start(sim)
            obs = np.asarray(sim._get_obs(), np.float32)
        ret, angles = 0.0, []
        while True:
            action = np.asarray(act(obs[None]))[0]
            obs, reward, terminal, truncated = env.step(action)
            ret += reward
            angles.append(float(sim.data.qpos[k]))
            if terminal or truncated:
                break
        a = np.abs(np.asarray(angles))  # [T]
        out.append(Posture(ret=ret, length=len(angles),
                           upside_down=float(np.mean(a > math.pi / 2)),
                           largest_angle=float(a.max()), final_angle=angles[-1]))
    return out


def format_postures(run: str, postures: list[Posture]) -> str:
    lines = [f"## {run}", "",
             "| episode | return | steps | steps upside down | largest torso angle | final angle |",
             "|---|---|---|---|---|---|"]
    for i, p in enumerate(postures):
        lines.append(f"| {i} | {p.ret:,.0f} | {p.length} | {p.upside_down:.0%} | "
                     f"{math.degrees(p.largest_angle):.0f} deg | "
                     f"{math.degrees(p.final_angle):.0f} deg |")
    return "\n".join(lines)


SUMMARY_HEAD = ["| run | returns | steps upside down |", "|---|---|---|"]


def summary_row(run: str, postures: list[Posture]) -> str:
    """One row of the --summary table: the run folder's name, the episodes' returns, and the
    range of their shares upside down."""
    shares = sorted(round(100 * p.upside_down) for p in postures)
    share = f"{shares[0]}%" if shares[0] == shares[-1] else f"{shares[0]}-{shares[-1]}%"
    returns = ", ".join(f"{p.ret:,.0f}" for p in postures)
    return f"| {Path(run).name} | {returns} | {share} |"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run folders written by master.py, or checkpoint folders inside them")
    p.add_argument("--episodes", type=int, default=3, help="greedy episodes per run")
    p.add_argument("--seed", type=int, default=123, help="seed of the episodes' start states")
    p.add_argument("--summary", action="store_true",
                   help="one table, a row per run, instead of a table per run")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error("--episodes must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from process import runtime

    runtime.import_tensorflow()  # without its start-up lines
    import envwrap
    from bench import target_quality
    from process import checkpoint

    if args.summary:
        print("\n".join(SUMMARY_HEAD), flush=True)
    for run in args.runs:
        try:
            loaded = target_quality.load_run(run)
            env = envwrap.make_env(loaded.config["env"], seed=args.seed)
            try:
                postures = greedy_postures(env, loaded.actor.greedy_action, args.episodes)
            finally:
                env.close()
        except (PostureError, target_quality.DiagnosticError, checkpoint.CheckpointError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if args.summary:
            print(summary_row(run, postures), flush=True)
        else:
            print(format_postures(run, postures), "", sep="\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
