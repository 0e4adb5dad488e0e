"""How close are a trained run's value targets to the true value of its policy?

Run: `.venv/bin/python bench/target_quality.py RUN_DIR [RUN_DIR ...] [--states 256]
[--horizon 500] [--seed 0] [--horizons 0,1,3,5,10,30] [--json PATH]`. RUN_DIR is a run folder
(its newest checkpoints) or a checkpoint folder inside one, such as
`checkpoints/backups/policy/8000` (runs keep such backups every `backup_every_n` updates).
Reads the run's `log/hps.json`, the checkpoints and the replay buffer (as it was at the
checkpoint's frame count); writes nothing but the optional `--json`.

The diagnostic behind the CPU benchmark's STEVE-versus-MVE question (docs/benchmark/cpu.md). For
`--states` transitions (s0, a0, r0, s1, d1) drawn uniformly from the run's replay buffer, as the
learner draws them, it computes, with the run's own policy pi, target Q' and world model:
- the truth: y* = reward_scale r0 + gamma (1 - d1) V(s1), V(s1) the discounted return of the
  greedy policy from s1 in the real simulator, followed for `--horizon` steps (the env's time limit
  ignored, as the targets ignore it; gamma^horizon bounds what is cut off), every state stepped
  together by learning/oracle.py (so only its tasks are supported: Hopper-v5, Walker2d-v5,
  HalfCheetah-v5, Swimmer-v5, InvertedPendulum-v5). The simulator starts from s1's exact state
  where the replay buffer stores it (runs made since the states were recorded). For older runs it
  is rebuilt from the observation (the dropped x position set to its initial value), and states
  whose observation clips a velocity are left out (`Simulator.observable`). The reproduction is
  checked: stepping a0 from s0 must give the stored s1 and r0 (`replay check`);
- the candidates of docs/algorithm.md section 3: mu[0, j] for j = 0..H (j = 0 is DDPG's target)
  and the reductions MVE (j = H), mean of the k-step returns, TD(lambda = 0.25), STEVE (inverse
  variance) and STEVE with covariances, each as bias (mean of y - y*) and RMSE against y*;
- for ensembles (STEVE configs): the mean STEVE weight w[0, j], the spread the ensembles predict
  for each candidate (root of the mean of sigma2[0, j]) against its actual RMSE, and the rank
  correlation over states between sigma2[0, j] and the actual squared error: STEVE's premise is
  that the first tracks the second;
- the model alone: along the same H steps from s1 under pi, the model's states (each of the M
  rollouts) against the real ones (mean squared error per dimension, relative to the variance of
  the sampled states) and its predicted rewards against the real ones;
- with `--horizons`: the candidates of every H listed, under the learned model and under the
  simulator side by side, each error split into a model part and a value part
  (bench/oracle_candidates.py; the offline table of docs/benchmark/oracle_notes.md).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The reductions compared (name -> value_expansion keys for valuerl.reduction_weights).
REDUCTIONS = {
    "MVE (j = H)": {},
    "mean of k-step": {"mean_k_return": True},
    "TD(lambda=0.25)": {"lambda_return": 0.25},
    "STEVE": {"steve_reweight": True},
    "STEVE cov": {"steve_reweight": True, "covariances": True},
}
ENSEMBLE_ONLY = ("STEVE", "STEVE cov")


class DiagnosticError(Exception):
    """A run or environment this diagnostic cannot evaluate; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# The real simulator, put into the state an observation describes
# ---------------------------------------------------------------------------------------------


class Simulator:
    """A MuJoCo environment that can be set to the state behind an observation.

    Observation = (qpos without its first k entries, qvel), k >= 0, as for the gymnasium MuJoCo
    locomotion tasks (k = 1: the x position, which their dynamics do not depend on) and the
    pendulums (k = 0). The dropped entries are set to their initial values.
    """

    def __init__(self, env_config: dict, seed: int):
        import envwrap

        self.env = envwrap.make_env(env_config, seed=seed)
        self.env.reset()
        sim = self.env.gym_env.unwrapped
        name = self.env.name
        if not (hasattr(sim, "set_state") and hasattr(sim, "model") and hasattr(sim, "data")):
            self.env.close()
            raise DiagnosticError(
                f"{name} is not a MuJoCo environment, so this diagnostic cannot put it into a "
                "replayed state; use a run on a MuJoCo task such as Hopper-v5."
            )
        self.sim = sim
        nq, nv = int(sim.model.nq), int(sim.model.nv)
        self.dropped = nq + nv - self.env.obs_dims
        if not 0 <= self.dropped <= nq:
            self.env.close()
            raise DiagnosticError(
                f"{name}'s observation ({self.env.obs_dims} numbers) is not its joint positions "
                f"and velocities ({nq} + {nv}), so the simulator state cannot be rebuilt from it; "
                "use a run on a task such as Hopper-v5, Walker2d-v5 or InvertedPendulum-v5."
            )
        self.nq, self.nv = nq, nv

    def state_of(self, obs: np.ndarray) -> np.ndarray:
        """The simulator state (qpos then qvel) behind `obs` [obs_dims] -> [nq + nv] float64."""
        k = self.dropped
        obs = np.asarray(obs, np.float64)
        return np.concatenate([self.sim.init_qpos[:k], obs])

    def set(self, obs: np.ndarray) -> None:
        """Put the simulator into the state of `obs` [obs_dims]."""
        state = self.state_of(obs)
        self.sim.set_state(state[: self.nq], state[self.nq :])

    def observable(self, obs: np.ndarray) -> bool:
        """Whether `obs` pins down the state: False where the environment clips a velocity in
        its observation (Hopper-v5 and Walker2d-v5 clip at +-10), found by scaling the velocities
        by 1.01 and checking that the observed ones scale too."""
        self.set(obs)
        qpos, qvel = self.sim.data.qpos.copy(), self.sim.data.qvel.copy()
        self.sim.set_state(qpos, qvel * 1.01)
        seen = np.asarray(self.sim._get_obs(), np.float64)[self.nq - self.dropped :]
        return bool(np.allclose(seen, qvel * 1.01, rtol=1e-6, atol=1e-9))

    def close(self) -> None:
        self.env.close()


def replay_check(oracle, state, action, reward, next_obs) -> dict[str, float]:
    """Median and largest |next obs - stored s1| and |reward - stored r0| when the simulator
    steps a0 from s0's state, over the transitions (all stepped together)."""
    out = oracle.step(state, action)
    obs_err = np.max(np.abs(out.next_obs - next_obs), axis=1)
    rew_err = np.abs(out.reward - reward)
    return {"obs_median": float(np.median(obs_err)), "obs_max": float(obs_err.max()),
            "reward_median": float(np.median(rew_err)), "reward_max": float(rew_err.max())}


# ---------------------------------------------------------------------------------------------
# Restoring a run
# ---------------------------------------------------------------------------------------------


class LoadedRun(NamedTuple):
    run: Path  # the run folder
    config: dict  # its log/hps.json
    agent: Any  # the ValueRL restored from the policy checkpoint
    model: Any  # the WorldModel restored beside it, or None (model-free)
    actor: Any  # agent.PolicyActor of the same checkpoint (the greedy policy)
    counters: dict  # the policy checkpoint's counters
    policy_path: Path  # the policy checkpoint folder


def load_run(path: str | Path) -> LoadedRun:
    """Restore a run's agent from a run folder (its newest checkpoints) or from one checkpoint
    folder inside it (such as checkpoints/backups/policy/<updates>, with the world model saved
    nearest it in frames)."""
    import valuerl as valuerl_lib
    from process import actors as acting
    from process import checkpoint, roles, rundir

    given = Path(path)
    run = rundir.find_run_folder(given.resolve())
    if not given.exists() or run is None:
        raise DiagnosticError(
            f"{given} is not a run folder or a checkpoint inside one (no log/hps.json at or "
            "above it); give a folder that master.py wrote, such as output/Hopper-v5/steve."
        )
    config = json.loads(rundir.RunDir.at(run).hps.read_text())
    try:
        found = rundir.find_checkpoints(given, config, label=f"{run}'s config")
    except checkpoint.CheckpointError as e:
        raise DiagnosticError(str(e)) from e
    seed = int(config.get("seed", 0) or 0)
    agent = valuerl_lib.ValueRL(config, seed=seed, jit_compile=False)
    key = roles.ROLE[roles.POLICY].checkpoint_key
    counters = checkpoint.restore_checkpoint(str(found.policy), {key: agent}, strict=True)
    model = None
    if found.worldmodel is not None:
        import worldmodel

        model = worldmodel.WorldModel(config, seed=seed, jit_compile=False)
        key = roles.ROLE[roles.WORLDMODEL].checkpoint_key
        checkpoint.restore_checkpoint(str(found.worldmodel), {key: model}, strict=True)
    actor = acting.PolicyActor(config, seed)
    actor.restore(str(found.policy))
    return LoadedRun(run, config, agent, model, actor, counters, Path(found.policy))


# Draws per transition asked for before giving up on finding observable ones (Walker2d-v5 runs
# that fall a lot can have fewer than 1 in 4 replayed states below the velocity clip).
MAX_DRAWS_PER_STATE = 64


def draw_transitions(run_dir: Path, config: dict, count: int, rng: np.random.Generator,
                     sim: Simulator, frames: int):
    """`count` transitions drawn uniformly from the run's replay buffer as the learner saw it at
    `frames` frames (its window of the newest replay_size). From a buffer without simulator
    states, those whose s0 or s1 the simulator cannot be set to (see Simulator.observable) are
    left out: it draws in rounds of 4 * count until `count` are kept, at most
    MAX_DRAWS_PER_STATE * count draws. Returns the batch (a replay.StateBatch when the buffer has
    states) and how many draws were left out before the count-th kept one."""
    import replay

    path = Path(run_dir) / "replay"
    if not replay.ReplayBuffer.exists(path):
        raise DiagnosticError(f"{run_dir} has no replay buffer (replay/); give a run folder that "
                              "has collected frames.")
    rounds, kept, drawn = [], 0, 0
    with replay.ReplayBuffer.open(path, sync=False) as buf:
        newest = int(config["policy_config"].get("replay_size") or buf.capacity)
        if buf.state_dims:  # exact states: every transition can be replayed
            return buf.sample(count, newest, rng, end=max(frames, 1)), 0
        while kept < count and drawn < MAX_DRAWS_PER_STATE * count:
            batch = buf.sample(4 * count, newest, rng, end=max(frames, 1))
            keep = np.asarray([b for b in range(len(batch.reward))
                               if sim.observable(batch.obs[b])
                               and sim.observable(batch.next_obs[b])], dtype=np.int64)
            rounds.append((batch, keep, drawn))
            kept, drawn = kept + len(keep), drawn + len(batch.reward)
    if kept < count:
        raise DiagnosticError(
            f"only {kept} of {drawn} replayed transitions have fully observed states (no velocity "
            f"at the observation clip), fewer than the {count} asked for; ask for fewer --states.")
    fields, positions = [], []
    for batch, keep, offset in rounds:
        fields.append([field[keep] for field in batch])
        positions.extend(offset + keep)
    joined = type(rounds[0][0])(*(np.concatenate(col)[:count] for col in zip(*fields, strict=True)))
    left_out = int(positions[count - 1]) + 1 - count  # draws skipped before the count-th kept
    return joined, left_out


# ---------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation (nan if either is constant)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two 1-D arrays (nan if either is constant)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return _corr(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))


def target_errors(agent, model, batch, truth: np.ndarray) -> dict:
    """Every candidate and reduction for row 0 against the truth y* [B]; see the module doc."""
    import tensorflow as tf

    import valuerl as valuerl_lib

    out = agent.value_targets(tf.constant(batch.reward, tf.float32),
                              tf.constant(batch.next_obs, tf.float32),
                              tf.constant(batch.terminal, tf.float32), model,
                              agent.draw_members())
    T, mu, sigma2 = out["T"], out["mu"], out["sigma2"]  # [H+1, H+1, M, N, K, B], [H+1, H+1, B]
    mu0, sig0 = mu.numpy()[0], sigma2.numpy()[0]  # [H+1(j), B]
    H = mu0.shape[0] - 1
    samples = int(np.prod(T.shape[2:5]))
    result = {"H": H, "samples": samples, "candidates": [], "reductions": {}}
    for j in range(H + 1):
        err = mu0[j] - truth
        result["candidates"].append({
            "j": j,
            "bias": float(err.mean()),
            "rmse": float(np.sqrt(np.mean(err ** 2))),
            "corr": _corr(mu0[j], truth),
            "predicted_std": float(np.sqrt(sig0[j].mean())),
            "rank_corr": rank_correlation(sig0[j], err ** 2) if samples > 1 else float("nan"),
        })
    for name, keys in ({} if H == 0 else REDUCTIONS).items():
        if name in ENSEMBLE_ONLY and samples == 1:
            continue
        w = valuerl_lib.reduction_weights(T, mu, sigma2, keys, agent.settings.variance_epsilon,
                                          agent.settings.covariance_ridge).numpy()  # [H+1, H+1, B]
        y = np.sum(w[0] * mu0, axis=0)  # [B]
        err = y - truth
        entry = {"bias": float(err.mean()), "rmse": float(np.sqrt(np.mean(err ** 2))),
                 "corr": _corr(y, truth), "weights": [float(v) for v in w[0].mean(axis=1)]}
        result["reductions"][name] = entry
    result["rollout"] = {k: out[k].numpy() for k in ("x", "rew", "dones")}
    return result


def model_errors(rollout: dict, real: dict, states_var: np.ndarray) -> list[dict]:
    """Model against the real simulator along the same H steps from s1, for t = 1..H: mean over
    dimensions of the squared state error / the variance of the sampled states, and the RMSE of
    the predicted reward (mean over reward members), over rollouts still alive in reality."""
    x_model = rollout["x"]  # [H+1, M, B, obs]
    rew_model = rollout["rew"].mean(axis=2)  # [H+1, M, B]: mean over reward members
    H = x_model.shape[0] - 1
    rows = []
    for t in range(1, H + 1):
        alive = real["alive"][t] > 0  # [B]
        if not alive.any():
            rows.append({"t": t, "state_err": float("nan"), "reward_rmse": float("nan"),
                         "alive": 0})
            continue
        dx = x_model[t][:, alive] - real["x"][t][None, alive]  # [M, b, obs]
        state_err = float(np.mean(dx ** 2 / np.maximum(states_var, 1e-8)))
        dr = rew_model[t][:, alive] - real["reward"][t - 1][None, alive]  # [M, b]
        rows.append({"t": t, "state_err": state_err,
                     "reward_rmse": float(np.sqrt(np.mean(dr ** 2))), "alive": int(alive.sum())})
    return rows


def _states(batch, sim: Simulator) -> tuple[np.ndarray, np.ndarray]:
    """The simulator states of s0 and s1 [B, nq + nv]: stored, or rebuilt from observations."""
    if hasattr(batch, "next_state"):
        return batch.state, batch.next_state
    return (np.stack([sim.state_of(o) for o in batch.obs]),
            np.stack([sim.state_of(o) for o in batch.next_obs]))


def diagnose(path: str | Path, states: int = 256, horizon: int = 500, seed: int = 0,
             horizons: tuple[int, ...] = ()) -> dict:
    """The whole diagnostic for one run folder or checkpoint folder (see load_run), as a dict
    (see the module doc); with `horizons`, also the learned-versus-oracle tables of those H."""
    from bench import oracle_candidates
    from learning import oracle as mujoco_oracle

    loaded = load_run(path)
    run_dir, config, agent, model = loaded.run, loaded.config, loaded.agent, loaded.model
    frames = int(loaded.counters.get("frames", 0))
    rng = np.random.default_rng(seed)
    gamma, scale = agent.gamma, agent.settings.reward_scale
    sim = Simulator(config["env"], seed)
    try:
        oracle = mujoco_oracle.MujocoOracle(config["env"])
    except mujoco_oracle.OracleError as e:
        sim.close()
        raise DiagnosticError(str(e)) from e
    try:
        batch, left_out = draw_transitions(run_dir, config, states, rng, sim, frames)
        s0_state, s1_state = _states(batch, sim)
        check = replay_check(oracle, s0_state, batch.action, batch.reward, batch.next_obs)
        real = oracle_candidates.true_values(oracle, loaded.actor.greedy_action, s1_state,
                                             horizon, gamma, scale, keep=agent.rollout_len)
        truth = scale * batch.reward + gamma * (1.0 - batch.terminal) * real["value"]  # [B]
        errors = target_errors(agent, model, batch, truth)
        horizon_tables = None
        if horizons:
            horizon_tables = oracle_candidates.compare(
                config, str(loaded.policy_path), model, oracle, batch, s1_state, truth,
                tuple(horizons), seed)
    finally:
        sim.close()
        oracle.close()
    rollout = errors.pop("rollout")
    report = {
        "run": str(run_dir),
        "checkpoint": str(path),
        "env": config["env"]["name"],
        "frames": frames,
        "updates": int(loaded.counters.get("updates", 0)),
        "states": states,
        "horizon": horizon,
        "cutoff_bound": float(gamma ** horizon),
        "left_out": left_out,
        "exact_states": hasattr(batch, "next_state"),
        "replay_check": check,
        "truth_mean": float(truth.mean()),
        "truth_std": float(truth.std()),
        **errors,
    }
    if model is not None:
        states_var = np.var(batch.next_obs, axis=0)  # [obs]
        report["model"] = model_errors(rollout, real, states_var)
    if horizon_tables is not None:
        report["oracle"] = horizon_tables
    return report


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def _f(v: float, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def format_report(r: dict) -> str:
    c = r["replay_check"]
    lines = [
        f"## {r['checkpoint']}",
        "",
        f"{r['env']}, {r['frames']} frames, {r['updates']} policy updates; {r['states']} replayed "
        f"transitions ({r['left_out']} draws with a clipped observation left out); truth y* = "
        f"{_f(r['truth_mean'])} +- {_f(r['truth_std'])} (returns over {r['horizon']} steps "
        f"from {'the stored' if r.get('exact_states') else 'rebuilt'} simulator states, "
        f"cut-off below {r['cutoff_bound']:.3f} of the value); replay check: next obs off by "
        f"{c['obs_median']:.1e} (median), {c['obs_max']:.1e} (max), reward by "
        f"{c['reward_median']:.1e}, {c['reward_max']:.1e}.",
        "",
        "| target | bias | RMSE | corr. with y* | ensemble std | rank corr. (sigma2, err^2) "
        "| STEVE weight |",
        "|---|---|---|---|---|---|---|",
    ]
    steve_w = r["reductions"].get("STEVE", {}).get("weights")
    for c in r["candidates"]:
        name = "j = 0 (DDPG: r0 + gamma Q')" if c["j"] == 0 else f"j = {c['j']} model steps"
        w = _f(steve_w[c["j"]], 2) if steve_w else "-"
        std = _f(c["predicted_std"]) if r["samples"] > 1 else "-"
        lines.append(f"| {name} | {_f(c['bias'])} | {_f(c['rmse'])} | {_f(c['corr'], 2)} | {std} | "
                     f"{_f(c['rank_corr'], 2)} | {w} |")
    for name, e in r["reductions"].items():
        lines.append(f"| {name} | {_f(e['bias'])} | {_f(e['rmse'])} | {_f(e['corr'], 2)} | | | |")
    if "model" in r:
        lines += ["", "| model step t | state error / state variance | reward RMSE | alive |",
                  "|---|---|---|---|"]
        for m in r["model"]:
            lines.append(f"| {m['t']} | {_f(m['state_err'], 3)} | {_f(m['reward_rmse'], 3)} | "
                         f"{m['alive']} |")
    if "oracle" in r:
        from bench import oracle_candidates

        lines += ["", "Candidates under the learned model and under the simulator "
                  "(bench/oracle_candidates.py):", ""]
        lines += oracle_candidates.format_tables(r["oracle"])
    return "\n".join(lines)


def _algorithm(report: dict) -> str:
    """The run folder's name without its .seed<N> suffix."""
    return re.sub(r"\.seed\d+$", "", Path(report["run"]).name)


def summarise(reports: list[dict]) -> str:
    """One table row per (environment, algorithm, frames): means over the runs (seeds)."""
    groups: dict[tuple, list[dict]] = {}
    for r in reports:
        groups.setdefault((r["env"], _algorithm(r), r["frames"]), []).append(r)

    def mean(values) -> float:
        values = [v for v in values if v is not None and not math.isnan(v)]
        return float(np.mean(values)) if values else float("nan")

    lines = [
        "| environment | run | frames | runs | y* | RMSE j=0 | RMSE j=H | RMSE STEVE | "
        "corr. j=0 | ens. std j=0 / j=H | rank corr. j=0 / j=H | STEVE w[0,0] | "
        "model err. t=H |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (env, algo, frames), rs in sorted(groups.items()):
        first = [r["candidates"][0] for r in rs]
        last = [r["candidates"][-1] for r in rs]
        has_h = rs[0]["H"] > 0
        ensemble = rs[0]["samples"] > 1
        steve = [r["reductions"].get("STEVE") for r in rs]
        cells = [
            env, algo, f"{frames}", str(len(rs)), _f(mean(r["truth_mean"] for r in rs)),
            _f(mean(c["rmse"] for c in first)),
            _f(mean(c["rmse"] for c in last)) if has_h else "-",
            _f(mean(e["rmse"] for e in steve)) if ensemble and has_h else "-",
            _f(mean(c["corr"] for c in first), 2),
            (f"{_f(mean(c['predicted_std'] for c in first))} / "
             f"{_f(mean(c['predicted_std'] for c in last))}") if ensemble else "-",
            (f"{_f(mean(c['rank_corr'] for c in first), 2)} / "
             f"{_f(mean(c['rank_corr'] for c in last), 2)}") if ensemble else "-",
            _f(mean(e["weights"][0] for e in steve), 2) if ensemble and has_h else "-",
            _f(mean(r["model"][-1]["state_err"] for r in rs), 3) if "model" in rs[0] else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _horizons(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of whole numbers such as "
                                         "0,1,3,5,10,30") from None
    if not values or values[0] < 0 or values[-1] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give horizons of 0 or more, at least one "
                                         "of them 1 or more")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run folders written by master.py, or checkpoint folders inside them")
    p.add_argument("--states", type=int, default=256, help="replayed transitions per run")
    p.add_argument("--horizon", type=int, default=500,
                   help="real steps per true value (the cut-off is at most gamma^horizon of it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the replay draw and members")
    p.add_argument("--horizons", type=_horizons, default=(), metavar="H1,H2,...",
                   help="also compare the learned model's candidates with the simulator's for "
                        "these H (e.g. 0,1,3,5,10,30)")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    args = p.parse_args(argv)
    if args.states < 2 or args.horizon < 1:
        p.error("--states must be at least 2 and --horizon at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import tensorflow as tf

    import replay
    from process import checkpoint

    tf.random.set_seed(args.seed)
    reports = []
    for run in args.runs:
        try:
            r = diagnose(run, args.states, args.horizon, args.seed, args.horizons)
        except (DiagnosticError, replay.ReplayError, checkpoint.CheckpointError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        reports.append(r)
        print(format_report(r), flush=True)
        print(flush=True)
    if len(reports) > 1:
        print("## Summary (means over runs)\n")
        print(summarise(reports))
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
