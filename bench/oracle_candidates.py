"""A trained run's candidate targets under its learned model and under the simulator, any H.

Used by `bench/target_quality.py --horizons 0,1,3,5,10,30` (docs/benchmark/oracle_notes.md, the
offline table of issue 31). Reads nothing itself: the caller gives the run's config, its policy
checkpoint, its world model (or None) and a batch of replayed transitions with their exact
simulator states. Writes nothing.

For B transitions (s0, a0, r0, s1, d1) and the truth y* [B] (r0 + gamma (1 - d1) V(s1), V the
greedy policy's discounted return from s1's exact state in the simulator, `true_values`):
- the candidates mu[0, j], j = 0..max(H), of docs/algorithm.md section 3, computed once with the
  run's policy, target policy and target Q restored at rollout length max(H), twice: imagined by
  the learned model (M transition and N reward members) and by the simulator
  (learning/oracle.py, the same M x N layout, every member the simulator). Both draw the same
  Q members, transition members and TD3 smoothing noise (the generator restored from the same
  checkpoint, the draws made in the same order and shapes), so they differ by the model only;
- per candidate j: the learned one's error (mu_learned - y*), its model part
  (mu_learned - mu_oracle) and its value part (mu_oracle - y*), each as RMSE and as bias (the
  mean), and the model part's median size (a few run-away rollouts make its RMSE large while
  the median stays small); RMSE_j / RMSE_0 for both next to gamma^j (with a perfect model and a
  Q error of the same size everywhere, candidate j's error shrinks like gamma^(j+1)); the cosine
  of the model part with the value part, mean(model value) / (RMSE_model RMSE_value), which says
  how the two add up, exactly: RMSE_learned^2 = RMSE_value^2 + RMSE_model^2
  + 2 cos RMSE_value RMSE_model (cos < 0: the model's error cancels part of the value's); and
  the rank correlation over states between the spread the ensembles predict (sigma2[0, j]) and
  the squared error, for both;
- per H: STEVE's reduction (docs/algorithm.md section 3) and MVE (j = H) over candidates 0..H,
  for both, with STEVE's mean weight on j = 0;
- per rollout step t: the learned model's imagined observations against the simulator's
  (`state_error`), and for both sides the share of rollouts with an observation outside the
  range of the sampled s1 (`outside`: any dimension below its minimum or above its maximum over
  the B states), which says when a learned rollout leaves the states the model was trained on,
  and far outside it (`far`: beyond the range by more than the range's own width, or not
  finite), which counts the rollouts that run away; where the observation is the joint
  positions then velocities, the share of sampled s1 whose observation clips a velocity
  (`clipped_share`; Hopper-v5 and Walker2d-v5 clip at +-10) and the learned side's `far` share
  split by start (`far_by_start`: rollouts from a clipped s1, and from the others).
A model-free run (no world model) gets the oracle's side only.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

HORIZONS = (0, 1, 3, 5, 10, 30)


def agent_at(config: dict, horizon: int, oracle: bool, policy_path: str, seed: int):
    """The run's ValueRL restored from `policy_path`, rolling out `horizon` steps with the learned
    model or (oracle) the simulator; the model's member counts (M, N) are kept either way."""
    import valuerl
    from process import checkpoint, roles

    cfg = copy.deepcopy(config)
    pc = cfg["policy_config"]
    ve = dict(pc.get("value_expansion") or {})
    ve.update(rollout_len=horizon, oracle=oracle)
    if horizon == 0:
        ve = {}
    pc["value_expansion"] = ve
    agent = valuerl.ValueRL(cfg, seed=seed, jit_compile=False)
    key = roles.ROLE[roles.POLICY].checkpoint_key
    checkpoint.restore_checkpoint(str(policy_path), {key: agent}, strict=True)
    return agent


def true_values(oracle, act, states: np.ndarray, horizon: int, gamma: float,
                reward_scale: float, keep: int = 0) -> dict[str, np.ndarray]:
    """Follow the greedy policy `act` (obs [B, obs] -> actions [B, act]) from each exact state
    [B, state_dims] for `horizon` simulator steps, all B stepped together (the time limit
    ignored, nothing after a termination). Returns value [B] (the discounted, scaled return) and
    the first `keep` steps: x [keep+1, B, obs] (x_0 = the start's observation), reward [keep, B]
    (of the step into x_t+1) and alive [keep+1, B] (1 while not terminated)."""
    B = len(states)
    obs = observe(oracle, states)
    x = np.zeros((keep + 1, B, obs.shape[1]), np.float32)
    rew, alive_at = np.zeros((keep, B)), np.zeros((keep + 1, B))
    x[0], alive_at[0] = obs, 1.0
    value, discount, alive = np.zeros(B), 1.0, np.ones(B)
    for t in range(horizon):
        out = oracle.step(states, act(obs))
        value += alive * discount * reward_scale * out.reward
        alive = alive * (1.0 - out.terminal)
        discount *= gamma
        states, obs = out.next_state, out.next_obs
        if t < keep:
            x[t + 1], rew[t], alive_at[t + 1] = obs, out.reward, alive
        elif not alive.any():
            break
    return {"value": value, "x": x, "reward": rew, "alive": alive_at}


def observe(oracle, states: np.ndarray) -> np.ndarray:
    """The observation of each state [B, state_dims] -> [B, obs] (the task's own function)."""
    nq = oracle.nq
    qpos, qvel = states[:, :nq], states[:, nq:]
    obs, _, _ = oracle.task(oracle.gym_env, qpos, qpos, qvel, np.zeros((len(states),
                                                                        oracle.action_dims)))
    return np.asarray(obs, np.float32)


def _members(config: dict, seed: int) -> dict:
    """One draw of the Q, transition and reward members, shared by both sides."""
    import tensorflow as tf

    import nn
    from learning.settings import Settings

    st = Settings.from_config(config)
    gen = tf.random.Generator.from_seed(seed)
    return {"q": nn.draw_members(gen, *st.q_sizes[::2]),
            "transition": nn.draw_members(gen, *st.transition_sizes[::2]),
            "reward": nn.draw_members(gen, *st.reward_sizes[::2])}


def _targets(agent, model, batch, s1_state, members) -> dict:
    import tensorflow as tf

    state = None if s1_state is None else tf.constant(s1_state, tf.float64)
    out = agent.value_targets(tf.constant(batch.reward, tf.float32),
                              tf.constant(batch.next_obs, tf.float32),
                              tf.constant(batch.terminal, tf.float32), model, members, state)
    return {k: out[k].numpy() for k in ("T", "mu", "sigma2", "x", "dones")}


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two 1-D arrays (nan if either is constant)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def _rmse(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err ** 2)))


def _reductions(agent, out: dict, H: int, truth: np.ndarray) -> dict:
    """STEVE and MVE over candidates 0..H of one side: RMSE against y*, STEVE's w[0, 0]."""
    import tensorflow as tf

    import valuerl

    T = tf.constant(out["T"][: H + 1, : H + 1])  # [H+1, H+1, M, N, K, B]
    mu, sigma2 = valuerl.target_moments(T)
    w = valuerl.reduction_weights(T, mu, sigma2, {"steve_reweight": True},
                                  agent.settings.variance_epsilon).numpy()  # [H+1, H+1, B]
    mu0 = mu.numpy()[0]  # [H+1(j), B]
    steve = np.sum(w[0] * mu0, axis=0)  # [B]
    return {"steve_rmse": _rmse(steve - truth), "mve_rmse": _rmse(mu0[H] - truth),
            "steve_w0": float(w[0, 0].mean())}


def compare(config: dict, policy_path: str, model: Any, oracle, batch, s1_state: np.ndarray,
            truth: np.ndarray, horizons=HORIZONS, seed: int = 0) -> dict:
    """The learned-versus-oracle tables for one checkpoint (module docstring)."""
    import tensorflow as tf

    top = max(horizons)
    members = _members(config, seed)
    gamma = float(config["env"]["discount"])
    sides = {"oracle": (agent_at(config, top, True, policy_path, seed), oracle, s1_state)}
    if model is not None:
        sides["learned"] = (agent_at(config, top, False, policy_path, seed), model, None)
    outs = {}
    for name, (agent, m, state) in sides.items():
        tf.random.set_seed(seed)
        outs[name] = _targets(agent, m, batch, state, members)
    result = {"horizons": list(horizons), "candidates": [], "by_horizon": []}
    rmse0 = {name: _rmse(out["mu"][0, 0] - truth) for name, out in outs.items()}
    for j in range(top + 1):
        row = {"j": j, "gamma_j": gamma ** j}
        for name, out in outs.items():
            err = out["mu"][0, j] - truth  # [B]
            row[f"{name}_rmse"] = _rmse(err)
            row[f"{name}_bias"] = float(np.mean(err))
            row[f"{name}_ratio"] = _rmse(err) / rmse0[name] if rmse0[name] else float("nan")
            row[f"{name}_rank_corr"] = rank_correlation(out["sigma2"][0, j], err ** 2)
            row[f"{name}_std"] = float(np.sqrt(out["sigma2"][0, j].mean()))
        if "learned" in outs:
            model_part = outs["learned"]["mu"][0, j] - outs["oracle"]["mu"][0, j]  # [B]
            value_part = outs["oracle"]["mu"][0, j] - truth  # [B]
            row["model_part_rmse"] = _rmse(model_part)
            row["model_part_bias"] = float(np.mean(model_part))
            row["model_part_median"] = float(np.median(np.abs(model_part)))
            row["model_value_cos"] = _cosine(model_part, value_part)
        result["candidates"].append(row)
    for H in horizons:
        row = {"H": H}
        for name, out in outs.items():
            if H == 0:
                row.update({f"{name}_steve_rmse": rmse0[name], f"{name}_mve_rmse": rmse0[name],
                            f"{name}_steve_w0": 1.0})
                continue
            agent = sides[name][0]
            row.update({f"{name}_{k}": v for k, v in _reductions(agent, out, H, truth).items()})
        result["by_horizon"].append(row)
    if "learned" in outs:
        result["state_error"] = _state_errors(outs["learned"], outs["oracle"], batch.next_obs)
    result["outside"] = {name: _outside(out["x"], batch.next_obs) for name, out in outs.items()}
    result["far"] = {name: _outside(out["x"], batch.next_obs, margin=1.0)
                     for name, out in outs.items()}
    clipped = _clipped(oracle, s1_state, batch.next_obs)
    if clipped is not None:
        result["clipped_share"] = float(clipped.mean())
        if "learned" in outs:
            x = outs["learned"]["x"]  # [H+1, M, B, obs]
            result["far_by_start"] = {
                part: (_outside(x[:, :, mask], batch.next_obs, margin=1.0) if mask.any()
                       else None)
                for part, mask in (("clipped", clipped), ("other", ~clipped))}
    return result


def _clipped(oracle, states: np.ndarray, obs: np.ndarray) -> np.ndarray | None:
    """Per sampled s1: whether its observation [B, obs] clips a velocity of its exact state
    [B, nq + nv], that is, its last nv numbers differ from qvel; None where the observation is
    not the joint positions (less up to two) then velocities."""
    nq = oracle.nq
    nv = states.shape[1] - nq
    if not 0 <= nq + nv - obs.shape[1] <= 2:
        return None
    return ~np.all(np.isclose(obs[:, -nv:], states[:, nq:], rtol=1e-5, atol=1e-6), axis=1)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """mean(a b) / (RMSE(a) RMSE(b)); nan when either is zero or not finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        den = _rmse(a) * _rmse(b)
        value = float(np.mean(a * b) / den) if den > 0 else float("nan")
    return value if math.isfinite(value) else float("nan")


def _outside(x: np.ndarray, states: np.ndarray, margin: float = 0.0) -> list[float]:
    """Per step t = 1..max(H): the share of rollouts x[t] [M, B, obs] with some dimension
    outside [min - margin w, max + margin w] of `states` [B, obs] over its B rows (w = max - min)
    or not finite. A rollout that has ended keeps counting: its last states are still fed to the
    networks."""
    low, high = states.min(axis=0), states.max(axis=0)  # [obs]
    low, high = low - margin * (high - low), high + margin * (high - low)
    with np.errstate(invalid="ignore"):
        return [float(np.mean(np.any((x[t] < low) | (x[t] > high) | ~np.isfinite(x[t]),
                                     axis=-1)))
                for t in range(1, x.shape[0])]


def _state_errors(learned: dict, oracle: dict, states: np.ndarray) -> list[float]:
    """Per step t = 1..max(H): the learned model's imagined observation against the simulator's,
    mean squared error over dimensions / the variance of the sampled s1, over rollouts the
    simulator has not ended."""
    var = np.maximum(np.var(states, axis=0), 1e-8)  # [obs]
    alive = np.cumprod(1.0 - oracle["dones"][1:], axis=0) > 0  # [H, M, B]
    errors = []
    for t in range(1, learned["x"].shape[0]):
        keep = alive[t - 1]  # [M, B]
        if not keep.any():
            errors.append(float("nan"))
            continue
        dx = (learned["x"][t] - oracle["x"][t])[keep]  # [n, obs]
        errors.append(float(np.mean(dx ** 2 / var)))
    return errors


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def format_tables(result: dict) -> list[str]:
    """The per-candidate and per-horizon tables of one checkpoint, as markdown lines."""
    learned = "model_part_rmse" in result["candidates"][0]
    shown = [r for r in result["candidates"] if r["j"] in set(result["horizons"]) | {2}]
    head = "| j | gamma^j | oracle RMSE (value part) | value part bias | oracle RMSE_j / RMSE_0 |"
    sep = "|---|---|---|---|---|"
    if learned:
        head += (" learned RMSE | learned RMSE_j / RMSE_0 | model part RMSE | model part bias |"
                 " cos(model, value) |")
        sep += "---|---|---|---|---|"
    head += " rank corr. (sigma2, err^2) oracle" + (" / learned |" if learned else " |")
    lines = [head, sep + "---|"]
    for r in shown:
        cells = [str(r["j"]), _f(r["gamma_j"], 3), _f(r["oracle_rmse"]), _f(r["oracle_bias"]),
                 _f(r["oracle_ratio"], 3)]
        if learned:
            cells += [_f(r["learned_rmse"]), _f(r["learned_ratio"], 3),
                      _f(r["model_part_rmse"]), _f(r["model_part_bias"]),
                      _f(r["model_value_cos"], 2)]
        corr = _f(r["oracle_rank_corr"], 2)
        if learned:
            corr += f" / {_f(r['learned_rank_corr'], 2)}"
        lines.append("| " + " | ".join(cells + [corr]) + " |")
    lines += ["", "| H | STEVE RMSE oracle" + (" / learned" if learned else "")
              + " | MVE (j = H) RMSE oracle" + (" / learned" if learned else "")
              + " | STEVE w[0, 0] oracle" + (" / learned |" if learned else " |"),
              "|---|---|---|---|"]
    for r in result["by_horizon"]:
        cells = [str(r["H"])]
        for key, digits in (("steve_rmse", 1), ("mve_rmse", 1), ("steve_w0", 2)):
            cell = _f(r[f"oracle_{key}"], digits)
            if learned:
                cell += f" / {_f(r[f'learned_{key}'], digits)}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    top = max(result["horizons"])  # the per-step lists hold t = 1..top
    picks = [t for t in sorted(set(result["horizons"]) | {1}) if 1 <= t <= top]
    if not picks:
        return lines
    if "state_error" in result:
        errs = result["state_error"]
        lines += ["", "Learned model against the simulator along the same rollouts (state error "
                  "/ state variance): " + ", ".join(f"t = {t}: {errs[t - 1]:.3f}"
                                                    for t in picks) + "."]
    far = result["far"]
    lines += ["", "Rollouts with an observation outside the range of the sampled states "
              "(in brackets: far outside it, by more than its width): "
              + "; ".join(f"{name} " + ", ".join(f"t = {t}: {share[t - 1]:.0%} "
                                                  f"({far[name][t - 1]:.1%})" for t in picks)
                          for name, share in result["outside"].items()) + "."]
    by_start = result.get("far_by_start")
    if by_start and all(v is not None for v in by_start.values()):
        lines += ["", f"Learned rollouts far outside that range, from the "
                  f"{result['clipped_share']:.0%} of sampled states whose observation clips a "
                  "velocity / from the others: " + ", ".join(
                      f"t = {t}: {by_start['clipped'][t - 1]:.1%} / {by_start['other'][t - 1]:.1%}"
                      for t in picks) + "."]
    return lines
