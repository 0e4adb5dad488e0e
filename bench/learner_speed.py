"""Learner speed benchmark: one policy-learner update and one world-model update per second, against
a plain matmul workload of the same FLOP count, in one process.

Run: `.venv/bin/python bench/learner_speed.py [--threads N] [--no-jit] [--quick]`. Reads
`config/experimental_setups/cpu.json` if it exists (for the CPU sizes), writes nothing.

Workloads: the paper's sizes (STEVE: H = 3, 4 x 4 x 4 ensembles, policy/Q 4 x 128, transition
8 x 512, done/reward 4 x 128, batch 512) for Hopper (11 obs, 3 act) and Humanoid-v5 (348, 17),
and the CPU sizes (Hopper dimensions). FLOPs are counted analytically as 2 * rows * in * out per
weight matrix (matmuls only; element-wise work, the target grid and Adam are not counted):
- policy-learner update = rollout forward (policy on M B (H+1) rows, transition and done on
  M B H, reward on N M B H, target Q on K M B (H+1)) + 3 x the Q forward on the rows the Q loss
  reads (B, or B (1 + H M) with the TD-k trick) + 3 x the policy forward on B + 2 x the Q forward
  on E B rows (the policy objective: forward and the input gradient, no weight gradient);
- world-model update = 3 x (transition + done + reward forward on B rows).
The matmul reference runs chained [B, d] @ [d, d] products (d = the widest layer of the workload,
an orthogonal d x d matrix so values stay bounded) under XLA. The machine is shared, so the update
and its reference are timed alternately for `--rounds` rounds and the best rate of each is kept.
Printed: updates/s, GFLOP/s, the ratio to the matmul rate, at the CPU sizes the rate with
cpu.json's `updates_per_call` updates per compiled call against one per call (and its ratio), the
per-call action latency, and last one line per size class: `cpu_learner_matmul_ratio=<the worst
learner at the CPU sizes, run with cpu.json's updates_per_call>`,
`paper_learner_matmul_ratio=<the worst at the paper's sizes>` (not with `--quick`), and
`learner_matmul_ratio=<the worst of all ratios, one update per call>`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mlp_flops(in_dim: int, out_dim: int, hidden: int, layers: int) -> int:
    dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    return sum(2 * dims[i] * dims[i + 1] for i in range(layers))


def make_config(obs, act, policy, model, ensembles=4, H=3, tdk=False):
    bayes = {"ensemble_size": ensembles, "train_sample_count": ensembles,
             "eval_sample_count": ensembles}
    return {
        "env": {"obs_dims": obs, "action_dims": act, "reward_scale": 1.0, "discount": 0.99},
        "policy_config": {
            **policy, "bayesian": bayes,
            "value_expansion": {"rollout_len": H, "steve_reweight": True, "tdk_trick": tdk},
        },
        "model_config": {**model, "bayesian": {"transition": bayes, "reward": bayes}},
    }


def policy_update_flops(config) -> int:
    env, pc, mc = config["env"], config["policy_config"], config["model_config"]
    s, a = env["obs_dims"], env["action_dims"]
    B, H = pc["batch_size"], pc["value_expansion"]["rollout_len"]
    E = pc["bayesian"]["ensemble_size"]
    K = pc["bayesian"]["eval_sample_count"]
    M = mc["bayesian"]["transition"]["eval_sample_count"]
    N = mc["bayesian"]["reward"]["eval_sample_count"]
    pol = mlp_flops(s, a, pc["hidden_dim"], pc["hidden_layers"])
    q = mlp_flops(s + a, 1, pc["hidden_dim"], pc["hidden_layers"])
    tr = mlp_flops(s + a, s, mc["transition_hidden_dim"], mc["transition_layers"])
    aux = mlp_flops(2 * s + a, 1, mc["aux_hidden_dim"], mc["aux_layers"])
    rollout = pol * M * B * (H + 1) + (tr + aux) * M * B * H + aux * N * M * B * H
    rollout += q * K * M * B * (H + 1)
    q_rows = B * (1 + H * M) if pc["value_expansion"].get("tdk_trick") else B
    return rollout + 3 * q * q_rows + 3 * pol * B + 2 * q * E * B


def model_update_flops(config) -> int:
    env, mc = config["env"], config["model_config"]
    s, a, B = env["obs_dims"], env["action_dims"], mc["batch_size"]
    tr = mlp_flops(s + a, s, mc["transition_hidden_dim"], mc["transition_layers"])
    aux = mlp_flops(2 * s + a, 1, mc["aux_hidden_dim"], mc["aux_layers"])
    return 3 * (tr + 2 * aux) * B


def timed(fn, min_seconds: float, min_calls: int = 3, warmup: int = 2) -> float:
    """Seconds per call, after `warmup` calls (compilation)."""
    for _ in range(warmup):
        fn()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="TF intra/inter-op threads")
    parser.add_argument("--no-jit", action="store_true", help="compile without XLA")
    parser.add_argument("--quick", action="store_true", help="CPU sizes only, shorter timing")
    parser.add_argument("--seconds", type=float, default=4.0, help="minimum timing per workload")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (best kept)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import tensorflow as tf

    import nn
    import valuerl
    import worldmodel

    nn.configure_tensorflow(args.threads)
    jit = not args.no_jit

    paper_policy = {"hidden_dim": 128, "hidden_layers": 4, "batch_size": 512}
    paper_model = {"transition_hidden_dim": 512, "transition_layers": 8, "aux_hidden_dim": 128,
                   "aux_layers": 4, "batch_size": 512}
    cpu_policy = {"hidden_dim": 64, "hidden_layers": 2, "batch_size": 128}
    cpu_model = {"transition_hidden_dim": 128, "transition_layers": 3, "aux_hidden_dim": 64,
                 "aux_layers": 2, "batch_size": 128}
    cpu_json = ROOT / "config" / "experimental_setups" / "cpu.json"
    cpu_source = "built-in CPU sizes"
    per_call = 10
    if cpu_json.exists():
        updates = json.loads(cpu_json.read_text()).get("updates", {})
        per_call = int(updates.get("policy_config", {}).get("updates_per_call") or 1)
        for key in cpu_policy:
            cpu_policy[key] = updates.get("policy_config", {}).get(key, cpu_policy[key])
        for block in (updates.get("model_config"), updates.get("*model_config")):
            for key in cpu_model:
                if block and key in block:
                    cpu_model[key] = block[key]
        cpu_source = str(cpu_json.relative_to(ROOT))
    setups = [("cpu hopper", 11, 3, cpu_policy, cpu_model, False)]
    if not args.quick:
        setups = [("paper hopper", 11, 3, paper_policy, paper_model, True),
                  ("paper humanoid", 348, 17, paper_policy, paper_model, True)] + setups
    print(f"threads={args.threads} jit={jit} cpu sizes from {cpu_source}: "
          f"policy {cpu_policy}, model {cpu_model}")

    def matmul_workload(rows: int, d: int):
        """A callable running chained [rows, d] @ [d, d] products under XLA, and its FLOPs."""
        rng = np.random.default_rng(0)
        w = tf.constant(np.linalg.qr(rng.normal(size=(d, d)))[0], tf.float32)
        x = tf.constant(rng.normal(size=(rows, d)), tf.float32)
        n = max(1, int(1e9 // (2 * rows * d * d)))  # about 1 GFLOP per call

        @tf.function(jit_compile=True)
        def chain(h):
            return tf.while_loop(lambda i, h: i < n, lambda i, h: (i + 1, tf.matmul(h, w)),
                                 (tf.constant(0), h))[1]

        return (lambda: chain(x).numpy()), 2.0 * rows * d * d * n

    worst = worst_paper = worst_cpu = math.inf
    rng = np.random.default_rng(0)
    for name, obs, act, policy, model, paper in setups:
        config = make_config(obs, act, policy, model)
        B = policy["batch_size"]
        batch = types.SimpleNamespace(
            obs=rng.normal(size=(B, obs)).astype(np.float32),
            next_obs=rng.normal(size=(B, obs)).astype(np.float32),
            action=rng.uniform(-1, 1, size=(B, act)).astype(np.float32),
            reward=rng.normal(size=B).astype(np.float32),
            terminal=(rng.uniform(size=B) < 0.05).astype(np.float32))
        wm = worldmodel.WorldModel(config, seed=0, jit_compile=jit)
        agent = valuerl.ValueRL(config, seed=0, jit_compile=jit)
        measured = {}  # label -> (FLOPs per update, matmul reference GFLOP/s)
        for label, fn, flops, rows, d in (
            ("policy-learner update",
             lambda a=agent, w=wm, b=batch: float(a.train_step(b, w)["losses/q"]),
             policy_update_flops(config), B, policy["hidden_dim"]),
            ("world-model update", lambda w=wm, b=batch: float(w.train_step(b)["wm/total"]),
             model_update_flops(config), model["batch_size"],
             max(model["transition_hidden_dim"], model["aux_hidden_dim"])),
        ):
            # The machine is shared: alternate the update and its matmul reference for a few
            # rounds and keep the best rate of each, so both see the same load.
            matmul, matmul_flops = matmul_workload(rows, d)
            seconds, reference = math.inf, 0.0
            for _ in range(2):  # compile both
                fn()
                matmul()
            for _ in range(args.rounds):
                seconds = min(seconds, timed(fn, args.seconds / args.rounds, 2, 0))
                reference = max(reference, matmul_flops / timed(matmul, 0.5, 2, 0) / 1e9)
            achieved = flops / seconds / 1e9
            ratio = achieved / reference
            measured[label] = (flops, reference)
            worst = min(worst, ratio)
            if paper:
                worst_paper = min(worst_paper, ratio)
            elif per_call == 1:
                worst_cpu = min(worst_cpu, ratio)
            print(f"{name:15s} {label:22s} {1 / seconds:9.2f} updates/s  {flops / 1e9:7.3f} "
                  f"GFLOP/update  {achieved:6.1f} GFLOP/s  matmul [{rows}x{d}]@[{d}x{d}] "
                  f"{reference:6.1f} GFLOP/s  ratio {ratio:.2f}")
        if not paper and per_call > 1:
            # updates_per_call: the same updates, `per_call` to one compiled call; alternated
            # with one update per call so both see the same load.
            stacked = types.SimpleNamespace(**{k: np.stack([v] * per_call)
                                               for k, v in vars(batch).items()})
            for label, one, many in (
                ("policy-learner update",
                 lambda a=agent, w=wm, b=batch: float(a.train_step(b, w)["losses/q"]),
                 lambda a=agent, w=wm, b=stacked: float(a.train_steps(b, w)["losses/q"])),
                ("world-model update", lambda w=wm, b=batch: float(w.train_step(b)["wm/total"]),
                 lambda w=wm, b=stacked: float(w.train_steps(b)["wm/total"])),
            ):
                single = chunked = math.inf
                for _ in range(2):
                    one()
                    many()
                for _ in range(args.rounds):
                    single = min(single, timed(one, args.seconds / args.rounds, 2, 0))
                    chunked = min(chunked, timed(many, args.seconds / args.rounds, 2, 0) / per_call)
                flops, reference = measured[label]
                ratio = flops / chunked / 1e9 / reference
                worst_cpu = min(worst_cpu, ratio)
                print(f"{name:15s} {label:22s} {per_call} per call: {1 / chunked:9.2f} updates/s, "
                      f"one per call: {1 / single:9.2f} updates/s; speed-up "
                      f"{single / chunked:.2f}; ratio {ratio:.2f} at {per_call} per call")
        del wm, agent

    import tempfile

    from process import checkpoint
    from process.actors import PolicyActor

    acting_config = make_config(11, 3, paper_policy, paper_model)
    acting = PolicyActor(acting_config, seed=0)  # how interactors and evaluators act
    with tempfile.TemporaryDirectory() as folder:
        saved = checkpoint.save_checkpoint(folder, {"valuerl": acting.valuerl},
                                           {"epoch": 0, "updates": 0, "frames": 0, "hours": 0.0})
        acting.restore(saved)
    for B in (1, 8):
        obs = rng.normal(size=(B, 11)).astype(np.float32)
        greedy = timed(lambda: acting.greedy_action(obs), 0.5, 200)  # noqa: B023
        explore = timed(lambda: acting.explore_action(obs, 0.05), 0.5, 200)  # noqa: B023
        print(f"action latency (policy 4 x 128, Hopper) B={B}: greedy_action "
              f"{greedy * 1e6:.0f} us/call, explore_action {explore * 1e6:.0f} us/call")
    print(f"cpu_learner_matmul_ratio={worst_cpu:.2f}")
    if worst_paper < math.inf:
        print(f"paper_learner_matmul_ratio={worst_paper:.2f}")
    print(f"learner_matmul_ratio={worst:.2f}")


if __name__ == "__main__":
    main()
