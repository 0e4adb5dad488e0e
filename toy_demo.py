"""Tabular toy demonstration of value expansion (the paper's first experiments), run as a script.

`python toy_demo.py [--out DIR] [--trials N] [--steps N] [--seed S]` runs one process with no
TensorFlow (numpy and matplotlib only) and reads nothing from disk. It writes, under
`DIR/Toy-v1/` (created if missing; DIR defaults to `output`, so files go to `output/Toy-v1/`):
- one CSV per method: `basic_q.csv`, `ensemble_q.csv`, `mve_true.csv`, `mve_noisy.csv`,
  `steve_true.csv`, `steve_noisy.csv`;
- `comparison.png` and `comparison.pdf`: convergence of the six methods;
- `target_errors_true.png/.pdf` and `target_errors_noisy.png/.pdf`: error of STEVE's candidate
  targets against the true one-step target, with the true and the noisy model.
Each file is written to a temporary name in the same folder and renamed into place; PDFs carry
no creation date, so a seed gives the same bytes in every file.

The chain. States 0..100 plus an absorbing terminal state (index 101). Every step moves s to s + 1
with reward -1, except that the step from 100 into the terminal state pays +100; the terminal state
pays 0 and stays put. With no discounting the true value of s is V(s) = s (V(terminal) = 0), and
the true one-step target of s, r(s) + V(s + 1), is again s (100 for the last state).
The noisy model predicts the reward correctly, but from a non-terminal state it jumps, with
probability 0.1, to a state drawn uniformly from 0..100 instead of moving to s + 1; from the
terminal state it stays terminal.

Learning. A table holds a value for each of the 102 states; the terminal entry is 0 and never
changes. Tables start at integers drawn uniformly from 0..100; the trials of all six methods start
from the same draws (the one-table method uses member 0), so the methods are compared on common
initial tables. Each step, every table picks its own state uniformly from 0..100 and replaces its
entry there with a target (learning rate 1); all tables of a step update together, from the tables
as they were before the step. The first transition of a target, (s, r(s), s + 1), is real, as a
replay-buffer transition is in STEVE; horizon h then adds h model steps from s + 1. With x_1 = s + 1
and x_{i+1} = model(x_i), the sample of table j for horizon h is

    T_h^j = r(s) + r(x_1) + ... + r(x_h) + Q_j(x_{h+1}).

1. basic Q-learning: one table, target T_0 from that table;
2. ensemble Q-learning: 8 tables, target r(s) + mean_j Q_j(s + 1), the mean of the T_0^j;
3. MVE, true dynamics: mean over the 8 tables of T_5^j;
4. MVE, noisy model: mean over 8 noisy rollouts x 8 tables of T_5^j;
5. STEVE, true dynamics: for each horizon h = 0..5 the mean m_h and population variance v_h
   (ddof 0) of its 8 samples; weights w_h = (1 / (v_h + 1e-8)) / sum_k (1 / (v_k + 1e-8));
   target sum_h w_h m_h;
6. STEVE, noisy model: the same, with 8 rollouts x 8 tables = 64 samples per horizon.
After each step, each method records the mean squared error over states 0..100 of its table (the
mean of its tables for ensembles) against V. The two STEVE methods also record, averaged over the
8 states updated that step, the squared error against the true one-step target of the horizon-0
mean m_0, the horizon-5 mean m_5, the weighted target, and the best single horizon (the smallest
(m_h - true)^2, an oracle no learner could pick); these feed the two target-error figures.

CSV format. The same four headerless columns as the learners' `greedy.csv` (hours, epoch, frames,
score), with no header row so that the same readers parse both. The toy has no clock and no epochs,
so the first three columns all hold the step number k = 1..N (the number of updates done) and the
fourth the table's mean squared error after step k. One row per step and trial, in step order:
all trials of step 1, then all trials of step 2, ...; row i belongs to trial i mod N_trials.

Randomness. One `numpy.random.SeedSequence(seed)` is split into seven streams: one for the initial
tables and one per method, so a given seed gives the same files bit for bit, and each method's
numbers do not depend on which other methods run. Everything is vectorised across trials,
ensemble members and rollouts; only the loop over steps is in Python.

Figures have a log y-axis on which values below 1e-3 (exact zeros included) are drawn at 1e-3. The
comparison shows, per method, the mean over trials and a band from the smallest to the largest
trial; the target-error figures show the mean over trials smoothed by a running mean over
steps / 100 steps. Figures use matplotlib's Agg backend, selected inside `main` (never at
import), so the script runs without a display. Importing this module has no side effects.

Compared with the 2018 script: the diagnostic true target is the right one (s, and 100 for the last
state, not off by one), the output folder is created, only current numpy and matplotlib functions
are used, all six methods are written (2018 wrote five) and every figure is saved.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from errors import UserError

ENV_NAME = "Toy-v1"
LAST_STATE = 100  # states 0..LAST_STATE are non-terminal
N_STATES = LAST_STATE + 1  # non-terminal states
TERMINAL = N_STATES  # index of the absorbing terminal state
STEP_REWARD = -1.0
FINAL_REWARD = 100.0
NOISE_PROB = 0.1
INIT_LOW, INIT_HIGH = 0, 100  # initial table entries: integers in [INIT_LOW, INIT_HIGH]
EPSILON = 1e-8  # added to each horizon's variance before inverting it

DEFAULT_OUT = "output"
DEFAULT_TRIALS = 10
DEFAULT_STEPS = 10_000
DEFAULT_SEED = 0
ENSEMBLE_SIZE = 8
N_ROLLOUTS = 8
HORIZON = 5

# Per-state lookups, indexed by state 0..TERMINAL.
REWARD = np.full(TERMINAL + 1, STEP_REWARD)  # [S]
REWARD[LAST_STATE] = FINAL_REWARD
REWARD[TERMINAL] = 0.0
NEXT_STATE = np.minimum(np.arange(TERMINAL + 1) + 1, TERMINAL)  # [S]

TARGET_ERROR_NAMES = (
    "horizon 0 (Q-learning target)",
    f"horizon {HORIZON} (MVE target)",
    "STEVE weighted",
    "best single horizon (oracle)",
)


class ToyDemoError(UserError, ValueError):
    """A setting of the toy demo that a user gave is unusable."""


@dataclass(frozen=True)
class Method:
    """One of the six learners: how many tables, how far it looks, and how it combines samples."""

    name: str  # file stem of its CSV
    label: str  # legend text
    n_tables: int
    horizon: int  # model steps after the real one
    model: str  # "true" or "noisy"
    n_rollouts: int
    combine: str  # "mean" (of the horizon-H samples) or "steve"


METHODS = (
    Method("basic_q", "Q-learning (1 table)", 1, 0, "true", 1, "mean"),
    Method("ensemble_q", f"Q-learning ({ENSEMBLE_SIZE}-table ensemble)", ENSEMBLE_SIZE, 0, "true",
           1, "mean"),
    Method("mve_true", f"MVE H={HORIZON}, true dynamics", ENSEMBLE_SIZE, HORIZON, "true", 1,
           "mean"),
    Method("mve_noisy", f"MVE H={HORIZON}, noisy model", ENSEMBLE_SIZE, HORIZON, "noisy",
           N_ROLLOUTS, "mean"),
    Method("steve_true", f"STEVE H={HORIZON}, true dynamics", ENSEMBLE_SIZE, HORIZON, "true", 1,
           "steve"),
    Method("steve_noisy", f"STEVE H={HORIZON}, noisy model", ENSEMBLE_SIZE, HORIZON, "noisy",
           N_ROLLOUTS, "steve"),
)


@dataclass
class MethodResult:
    """What one method recorded over all steps and trials."""

    method: Method
    table_mse: np.ndarray  # [steps, trials], after each step's update
    target_errors: np.ndarray | None  # [steps, trials, 4] in TARGET_ERROR_NAMES order; STEVE only
    final_tables: np.ndarray  # [trials, tables, S]


def true_values() -> np.ndarray:
    """V(s) = s for s = 0..100 and 0 for the terminal state, shape [102]."""
    values = np.arange(TERMINAL + 1, dtype=np.float64)
    values[TERMINAL] = 0.0
    return values


def true_one_step_targets(states: np.ndarray) -> np.ndarray:
    """r(s) + V(next(s)) under the true dynamics; equals s, and 100 for the last state."""
    states = np.asarray(states)
    return REWARD[states] + true_values()[NEXT_STATE[states]]


def initial_tables(rng: np.random.Generator, n_trials: int, n_tables: int) -> np.ndarray:
    """Random integer tables [trials, tables, S] with the terminal entry 0."""
    tables = rng.integers(INIT_LOW, INIT_HIGH + 1, size=(n_trials, n_tables, TERMINAL + 1))
    tables = tables.astype(np.float64)
    tables[..., TERMINAL] = 0.0
    return tables


def rollout_states(
    first_next: np.ndarray, horizon: int, model: str, rng: np.random.Generator
) -> np.ndarray:
    """States x_1..x_{H+1} [..., H+1] reached from x_1 = first_next by `horizon` model steps."""
    if model == "true":
        offsets = np.arange(horizon + 1)  # [H+1]
        return np.minimum(first_next[..., None] + offsets, TERMINAL)
    if model != "noisy":
        raise ToyDemoError(f"Unknown model {model!r}; use 'true' or 'noisy'.")
    shape = first_next.shape
    jump = rng.random(shape + (horizon,)) < NOISE_PROB  # [..., H]
    landing = rng.integers(0, N_STATES, size=shape + (horizon,))  # [..., H]
    xs = np.empty(shape + (horizon + 1,), dtype=np.int64)  # [..., H+1]
    xs[..., 0] = first_next
    for i in range(horizon):
        x = xs[..., i]
        jumps = jump[..., i] & (x != TERMINAL)
        xs[..., i + 1] = np.where(jumps, landing[..., i], NEXT_STATE[x])
    return xs


def target_samples(
    tables: np.ndarray,
    states: np.ndarray,
    horizon: int,
    model: str,
    n_rollouts: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Samples T_h^j for h = 0..horizon, shape [trials, updated, H+1, rollouts * tables].

    tables: [trials, tables, S]; states: [trials, updated], the state each update targets.
    """
    n_trials = tables.shape[0]
    first_next = NEXT_STATE[states]  # [T, M], the real transition
    first_next = np.broadcast_to(first_next[..., None], states.shape + (n_rollouts,))  # [T, M, R]
    xs = rollout_states(first_next, horizon, model, rng)  # [T, M, R, H+1]: x_1..x_{H+1}
    rewards = np.concatenate(
        [np.broadcast_to(REWARD[states][..., None, None], xs.shape[:-1] + (1,)),  # r(s)
         REWARD[xs[..., :-1]]],  # r(x_1)..r(x_H)
        axis=-1,
    )  # [T, M, R, H+1]
    returns = np.cumsum(rewards, axis=-1)  # [T, M, R, H+1]: r(s) + ... + r(x_h)
    trial_idx = np.arange(n_trials).reshape(-1, 1, 1, 1)  # [T, 1, 1, 1]
    bootstrap = np.moveaxis(tables, 1, 2)[trial_idx, xs]  # [T, M, R, H+1, E]: Q_j(x_{h+1})
    samples = returns[..., None] + bootstrap  # [T, M, R, H+1, E]
    samples = np.moveaxis(samples, 3, 2)  # [T, M, H+1, R, E]
    return samples.reshape(samples.shape[:3] + (-1,))  # [T, M, H+1, R*E]


def steve_weights(samples: np.ndarray) -> np.ndarray:
    """Normalised inverse-variance weights [..., H+1] of samples [..., H+1, n]."""
    inverse = 1.0 / (samples.var(axis=-1) + EPSILON)  # [..., H+1]
    return inverse / inverse.sum(axis=-1, keepdims=True)


def run_method(
    method: Method,
    n_trials: int,
    n_steps: int,
    rng: np.random.Generator,
    tables: np.ndarray,
) -> MethodResult:
    """Run `n_steps` synchronous updates of all tables in all trials; tables: [T, >=E, S]."""
    tables = np.array(tables[:, : method.n_tables], dtype=np.float64)  # [T, E, S], a copy
    if tables.shape[0] != n_trials:
        raise ToyDemoError(
            f"Initial tables hold {tables.shape[0]} trials but {n_trials} were asked for; "
            "pass one table set per trial."
        )
    values = true_values()[:N_STATES]  # [N]
    trial_idx = np.arange(n_trials)[:, None]  # [T, 1]
    table_idx = np.arange(method.n_tables)[None, :]  # [1, E]
    table_mse = np.empty((n_steps, n_trials))
    target_errors = np.empty((n_steps, n_trials, 4)) if method.combine == "steve" else None
    for step in range(n_steps):
        states = rng.integers(0, N_STATES, size=(n_trials, method.n_tables))  # [T, E]
        samples = target_samples(
            tables, states, method.horizon, method.model, method.n_rollouts, rng
        )  # [T, E, H+1, n]
        means = samples.mean(axis=-1)  # [T, E, H+1]
        if method.combine == "steve":
            weights = steve_weights(samples)  # [T, E, H+1]
            targets = (weights * means).sum(axis=-1)  # [T, E]
            truth = true_one_step_targets(states)  # [T, E]
            horizon_err = (means - truth[..., None]) ** 2  # [T, E, H+1]
            target_errors[step, :, 0] = horizon_err[..., 0].mean(axis=-1)
            target_errors[step, :, 1] = horizon_err[..., -1].mean(axis=-1)
            target_errors[step, :, 2] = ((targets - truth) ** 2).mean(axis=-1)
            target_errors[step, :, 3] = horizon_err.min(axis=-1).mean(axis=-1)
        else:
            targets = means[..., -1]  # [T, E]
        tables[trial_idx, table_idx, states] = targets
        table_mse[step] = ((tables[..., :N_STATES].mean(axis=1) - values) ** 2).mean(axis=-1)
    return MethodResult(method, table_mse, target_errors, tables)


def check_settings(n_trials: int, n_steps: int, seed: int) -> None:
    """Raise ToyDemoError naming the setting if a run cannot be done with these values."""
    if n_trials < 1:
        raise ToyDemoError(f"--trials must be at least 1 (got {n_trials}); pass a positive count.")
    if n_steps < 1:
        raise ToyDemoError(f"--steps must be at least 1 (got {n_steps}); pass a positive count.")
    if seed < 0:
        raise ToyDemoError(f"--seed must be 0 or more (got {seed}); pass a non-negative integer.")


def run_all(
    n_trials: int = DEFAULT_TRIALS,
    n_steps: int = DEFAULT_STEPS,
    seed: int = DEFAULT_SEED,
    methods: Sequence[Method] = METHODS,
) -> dict[str, MethodResult]:
    """Run each method in `methods` (default: all six) and return their results by name."""
    check_settings(n_trials, n_steps, seed)
    streams = np.random.SeedSequence(seed).spawn(1 + len(METHODS))
    start = initial_tables(np.random.default_rng(streams[0]), n_trials, ENSEMBLE_SIZE)
    results = {}
    for method in methods:
        index = 1 + [m.name for m in METHODS].index(method.name)
        rng = np.random.default_rng(streams[index])
        results[method.name] = run_method(method, n_trials, n_steps, rng, start)
    return results


def _replace_atomically(path: Path, write) -> None:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it to `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_csv(path: Path, table_mse: np.ndarray) -> None:
    """Write [steps, trials] errors as headerless rows `step,step,step,error`, step-major."""
    n_steps, n_trials = table_mse.shape
    steps = np.repeat(np.arange(1, n_steps + 1), n_trials)  # [steps * trials]
    errors = table_mse.reshape(-1)  # step-major: row i is trial i mod n_trials
    pairs = zip(steps.tolist(), errors.tolist(), strict=True)
    lines = [f"{k},{k},{k},{e:.10g}\n" for k, e in pairs]

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.writelines(lines)

    _replace_atomically(path, write)


def read_csv(path: Path) -> np.ndarray:
    """Read a file written by write_csv back into an array [rows, 4]."""
    return np.loadtxt(path, delimiter=",", ndmin=2)


def _save_figure(fig, out_dir: Path, stem: str) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{stem}.{ext}"
        # no creation date in the PDF, so a seed gives the same bytes
        metadata = {"CreationDate": None} if ext == "pdf" else None

        def write(tmp: str, ext: str = ext, metadata: dict | None = metadata) -> None:
            fig.savefig(tmp, format=ext, dpi=150, metadata=metadata)

        _replace_atomically(path, write)
        paths.append(path)
    return paths


# Style per method: colour, line style (solid = true dynamics, dashed = noisy model).
_STYLES = {
    "basic_q": ("tab:gray", "-"),
    "ensemble_q": ("tab:purple", ":"),
    "mve_true": ("tab:blue", "-"),
    "mve_noisy": ("tab:green", "--"),
    "steve_true": ("tab:red", "-"),
    "steve_noisy": ("tab:orange", "--"),
}
LOG_FLOOR = 1e-3  # values below this (exact zeros included) are drawn at the floor on log axes


def _running_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean over the last `window` steps (fewer at the start), along axis 0."""
    csum = np.cumsum(x, axis=0)
    out = csum.copy()
    out[window:] = csum[window:] - csum[:-window]
    counts = np.minimum(np.arange(1, x.shape[0] + 1), window).reshape((-1,) + (1,) * (x.ndim - 1))
    return out / counts


def plot_comparison(results: dict[str, MethodResult], out_dir: Path) -> list[Path]:
    """Figure `comparison`: table MSE of every method, mean over trials, band = min..max."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6), layout="constrained")
    for name, result in results.items():
        colour, style = _STYLES.get(name, (None, "-"))
        mse = np.maximum(result.table_mse, LOG_FLOOR)  # [steps, trials]
        steps = np.arange(1, mse.shape[0] + 1)
        ax.plot(steps, mse.mean(axis=1), color=colour, linestyle=style, linewidth=1.8,
                label=result.method.label)
        ax.fill_between(steps, mse.min(axis=1), mse.max(axis=1), color=colour, alpha=0.15,
                        linewidth=0)
    n_trials = next(iter(results.values())).table_mse.shape[1]
    ax.set_yscale("log")
    ax.set_xlabel("update step")
    ax.set_ylabel(f"MSE of the (mean) table vs. true values (floor {LOG_FLOOR:g})")
    ax.set_title(f"{ENV_NAME}: convergence, mean and min-max band over {n_trials} trials")
    ax.grid(True, which="major", alpha=0.3)
    fig.legend(loc="outside lower center", ncol=3, fontsize=9)
    paths = _save_figure(fig, out_dir, "comparison")
    plt.close(fig)
    return paths


def plot_target_errors(result: MethodResult, out_dir: Path, stem: str) -> list[Path]:
    """Figure `stem`: squared error of STEVE's candidate targets vs. the true one-step target."""
    import matplotlib.pyplot as plt

    errors = result.target_errors  # [steps, trials, 4]
    n_steps, n_trials = errors.shape[:2]
    window = max(1, n_steps // 100)
    smooth = _running_mean(errors.mean(axis=1), window)  # [steps, 4]
    steps = np.arange(1, n_steps + 1)
    fig, ax = plt.subplots(figsize=(8, 5.5), layout="constrained")
    styles = [("tab:gray", ":"), ("tab:blue", "--"), ("tab:red", "-"), ("tab:green", "-.")]
    for k, (name, (colour, style)) in enumerate(zip(TARGET_ERROR_NAMES, styles, strict=True)):
        ax.plot(steps, np.maximum(smooth[:, k], LOG_FLOOR), color=colour, linestyle=style,
                linewidth=1.8, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("update step")
    ax.set_ylabel(f"squared error vs. true target (floor {LOG_FLOOR:g})")
    ax.set_title(f"{ENV_NAME}: {result.method.label}\n"
                 f"target error, mean over {n_trials} trials, running mean over {window} steps")
    ax.grid(True, which="major", alpha=0.3)
    fig.legend(loc="outside lower center", ncol=2, fontsize=9)
    paths = _save_figure(fig, out_dir, stem)
    plt.close(fig)
    return paths


def write_outputs(results: dict[str, MethodResult], out_root: Path) -> list[Path]:
    """Write the CSVs and figures of a full run under out_root/Toy-v1/; return the paths."""
    out_dir = Path(out_root) / ENV_NAME
    if out_dir.exists() and not out_dir.is_dir():
        raise ToyDemoError(
            f"{out_dir} exists and is not a folder; remove it or pick another --out."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, result in results.items():
        path = out_dir / f"{name}.csv"
        write_csv(path, result.table_mse)
        paths.append(path)
    paths += plot_comparison(results, out_dir)
    target_figures = (("steve_true", "target_errors_true"), ("steve_noisy", "target_errors_noisy"))
    for name, stem in target_figures:
        if name in results:
            paths += plot_target_errors(results[name], out_dir, stem)
    return paths


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"output root; files go to OUT/{ENV_NAME}/ (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                        help="independent trials (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help="update steps per trial (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="seed; a seed gives the same files (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    try:
        started = time.perf_counter()
        results = run_all(args.trials, args.steps, args.seed)
        ran = time.perf_counter() - started
        paths = write_outputs(results, Path(args.out))
    except UserError as err:
        print(f"toy_demo: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"toy_demo: cannot write under {args.out} ({err.strerror or err}); "
              "pick a writable --out.", file=sys.stderr)
        return 2
    for name, result in results.items():
        print(f"{name:12s} final table MSE {result.table_mse[-1].mean():.4g} "
              f"(mean over {args.trials} trials)")
    print(f"ran {args.trials} trials x {args.steps} steps in {ran:.1f} s; "
          f"wrote {len(paths)} files to {Path(args.out) / ENV_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
