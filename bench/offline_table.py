"""The oracle report's offline table: learned and oracle candidate targets of the finished
`steve_td3_offline` runs, side by side (docs/benchmark/oracle_notes.md fixes what it holds).

Run:
    .venv/bin/python bench/offline_table.py run RUNS_ROOT OUT_DIR [--wait]
    .venv/bin/python bench/offline_table.py table OUT_DIR

`run` takes each finished run RUNS_ROOT/<ENV>/steve_td3_offline.seed<S> (S = 0, 1; ENV =
Hopper-v5, HalfCheetah-v5, Walker2d-v5) and, for 20k, 40k and 60k frames, the policy checkpoint
whose frame count is nearest (its backups and its newest checkpoint), and runs
bench/target_quality.py on it with 512 states and H in {0, 1, 3, 5, 10, 30}. Each analysis is
written as OUT_DIR/<ENV>.seed<S>.<F>k.md (the diagnostic's text) and .json (its numbers, renamed
into place when complete); one already written is not run again. With `--wait` it waits for the
runs still going and exits when every analysis is written. It only reads the runs.

`table` prints, from the .json files in OUT_DIR, per task: each checkpoint's RMSE_j / RMSE_0 of
the candidates under the simulator (the value part of the error) and under the learned model,
beside gamma^j, and the notes' H = 10 rule: the mean over the task's rows of the oracle's
RMSE_10 / RMSE_0, at most 0.80 for `steve_td3_oracle_h10` to run on that task. Below it, for
the analyses that hold them, how the learned candidates' error splits: the cosine of the model
part with the value part (bench/oracle_candidates.py), the two parts' biases, the model part's
median and RMSE, and how many learned rollouts leave the range of the sampled states.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")
SEEDS = (0, 1)
FRAMES = (20_000, 40_000, 60_000)
HORIZONS = "0,1,3,5,10,30"
STATES = 512
SHOWN = (1, 3, 5, 10, 30)  # the candidates j in the table
H10_RULE = 0.80  # the mean oracle RMSE_10 / RMSE_0 at or below which H = 10 runs


def _frames(checkpoint: Path) -> int | None:
    try:
        return int(json.loads((checkpoint / "counters.json").read_text())["frames"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def nearest_checkpoint(run: Path, frames: int) -> Path:
    """The policy checkpoint of `run` whose frame count is nearest `frames`: one of its backups
    (checkpoints/backups/policy/<updates>), or the run folder itself for its newest checkpoint."""
    newest = [_frames(c) for c in (run / "checkpoints" / "policy").glob("ckpt-*")]
    found = [(max((f for f in newest if f is not None), default=None), run)]
    backups = run / "checkpoints" / "backups" / "policy"
    if backups.is_dir():
        found += [(_frames(b), b) for b in sorted(backups.iterdir())]
    found = [(abs(f - frames), path) for f, path in found if f is not None]
    if not found:
        raise SystemExit(f"error: {run} has no policy checkpoint; give a run master.py wrote.")
    return min(found, key=lambda item: item[0])[1]


def analyses(runs_root: Path, out: Path) -> list[tuple[Path, Path, bool]]:
    """(checkpoint or run, output stem, the run is finished) of every analysis in table order."""
    todo = []
    for seed in SEEDS:
        for env in TASKS:
            run = runs_root / env / f"steve_td3_offline.seed{seed}"
            done = (run / "state" / "finished.json").is_file()
            for frames in FRAMES:
                stem = out / f"{env}.seed{seed}.{frames // 1000}k"
                todo.append((nearest_checkpoint(run, frames) if done else run, stem, done))
    return todo


def run_analyses(runs_root: Path, out: Path, wait: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    while True:
        pending = 0
        for target, stem, done in analyses(runs_root, out):
            result = Path(f"{stem}.json")
            if result.is_file():
                continue
            if not done:
                pending += 1
                continue
            partial = Path(f"{stem}.json.tmp")
            command = [sys.executable, str(ROOT / "bench" / "target_quality.py"), str(target),
                       "--states", str(STATES), "--horizons", HORIZONS, "--seed", "0",
                       "--json", str(partial)]
            print(time.strftime("%H:%M:%S"), "analysing", target, flush=True)
            with open(f"{stem}.md", "w") as text:
                code = subprocess.run(command, stdout=text, stderr=subprocess.DEVNULL).returncode
            if code != 0:
                print(f"error: bench/target_quality.py exited {code} on {target}; see {stem}.md",
                      file=sys.stderr)
                return 1
            partial.replace(result)
        if not pending or not wait:
            print(f"{pending} analysis(es) wait for their run to finish" if pending else
                  "every analysis is written", flush=True)
            return 0
        time.sleep(120)


def _load(out: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for path in sorted(out.glob("*.json")):
        for result in json.loads(path.read_text()):
            seed = Path(result["run"]).name.rsplit(".seed", 1)[-1]  # <EXPERIMENT>.seed<S>
            rows.setdefault(result["env"], []).append(dict(result, seed=seed))
    for task_rows in rows.values():
        task_rows.sort(key=lambda r: (str(r["seed"]), r["frames"]))
    return rows


def _ratios(result: dict, side: str) -> dict[int, float]:
    return {c["j"]: c[f"{side}_ratio"] for c in result["oracle"]["candidates"]}


def _ratio(x: float) -> str:
    """A ratio to three decimals; from 1,000 up (a learned model's rollout run away) in
    powers of ten."""
    return f"{x:.3f}" if abs(x) < 1000 else f"{x:.1e}"


def format_table(out: Path) -> str:
    lines = []
    for env, rows in _load(out).items():
        gammas = {c["j"]: c["gamma_j"] for c in rows[0]["oracle"]["candidates"]}
        head = " | ".join(f"j = {j}" for j in SHOWN)
        lines += [f"## {env}", "",
                  "RMSE_j / RMSE_0 of the candidate targets, under the simulator (oracle) and "
                  "under the learned model (learned); gamma^j: "
                  + ", ".join(f"{gammas[j]:.3f}" for j in SHOWN) + ".", "",
                  f"| seed | frames | RMSE_0 | oracle: {head} | learned: {head} |",
                  "|---|---|---|" + "---|" * (2 * len(SHOWN))]
        for r in rows:
            oracle, learned = _ratios(r, "oracle"), _ratios(r, "learned")
            rmse0 = r["oracle"]["candidates"][0]["oracle_rmse"]
            lines.append(f"| {r['seed']} | {r['frames']:,} | {rmse0:.1f} | "
                         + " | ".join(_ratio(oracle[j]) for j in SHOWN) + " | "
                         + " | ".join(_ratio(learned[j]) for j in SHOWN) + " |")
        h10 = [_ratios(r, "oracle")[10] for r in rows]
        mean = sum(h10) / len(h10)
        verdict = "runs" if mean <= H10_RULE else "does not run"
        lines += ["", f"H = 10 rule: mean oracle RMSE_10 / RMSE_0 over {len(h10)} row(s) "
                      f"{mean:.3f} (rule: <= {H10_RULE:.2f}): steve_td3_oracle_h10 {verdict}"
                      + ("" if len(h10) == len(SEEDS) * len(FRAMES) else
                         f" (not final: {len(h10)} of its {len(SEEDS) * len(FRAMES)} rows)")
                      + ".", ""]
        lines += _parts_table(rows)
    return "\n".join(lines)


PARTS = (3, 10, 30)  # the candidates j of the model-part table


def _parts_table(rows: list[dict]) -> list[str]:
    """How the learned candidates' model part adds to their value part, and how many learned
    rollouts leave the sampled states' range (older analyses hold none of it: no row)."""
    rows = [r for r in rows if "model_part_median" in r["oracle"]["candidates"][0]
            and "learned" in r["oracle"].get("far", {})]
    if not rows:
        return []
    js = " | ".join(f"j = {j}" for j in PARTS)
    lines = ["Model part (learned - oracle) against value part (oracle - truth): their cosine "
             "(below 0: the model's error cancels part of the value's), the value part's bias "
             "at j = 0 and the model part's at j = 30, the model part's median size and RMSE "
             "at j = 10, and the share of rollouts with an observation outside the range of the "
             "sampled states at t = 5, and far outside it (by more than its width) at t = 5 and "
             "t = 10, learned / oracle; then the learned side's far share at t = 10 from the "
             "sampled states whose observation clips a velocity and from the others (-: none "
             "clipped), with the clipped states' share.", "",
             f"| seed | frames | cos: {js} | value bias j = 0 | model bias j = 30 | model part "
             "j = 10: median / RMSE | outside t = 5 | far t = 5 | far t = 10 | far t = 10 from "
             "clipped / other (clipped) |",
             "|---|---|" + "---|" * (len(PARTS) + 7)]
    for r in rows:
        cand = {c["j"]: c for c in r["oracle"]["candidates"]}
        out, far = r["oracle"]["outside"], r["oracle"]["far"]
        cells = [str(r["seed"]), f"{r['frames']:,}"]
        cells += [_cos(cand[j]["model_value_cos"]) for j in PARTS]
        cells += [f"{cand[0]['oracle_bias']:.1f}", _size(cand[30]["model_part_bias"]),
                  f"{_size(cand[10]['model_part_median'])} / "
                  f"{_size(cand[10]['model_part_rmse'])}",
                  f"{out['learned'][5 - 1]:.0%} / {out['oracle'][5 - 1]:.0%}"]
        cells += [f"{far['learned'][t - 1]:.1%} / {far['oracle'][t - 1]:.1%}" for t in (5, 10)]
        cells.append(_by_start(r["oracle"]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _by_start(result: dict) -> str:
    by_start = result.get("far_by_start") or {}
    if by_start.get("clipped") is None or by_start.get("other") is None:
        return "-"
    return (f"{by_start['clipped'][10 - 1]:.1%} / {by_start['other'][10 - 1]:.1%} "
            f"({result['clipped_share']:.0%})")


def _cos(x: float) -> str:
    return "-" if x != x else f"{x:.2f}"  # nan: a part is zero or ran away


def _size(x: float) -> str:
    return f"{x:.1f}" if abs(x) < 1e4 else f"{x:.1e}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run bench/target_quality.py on the finished runs")
    r.add_argument("runs_root", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--wait", action="store_true", help="wait for the runs still going")
    t = sub.add_parser("table", help="print the table from the analyses written")
    t.add_argument("out", type=Path)
    args = p.parse_args(argv)
    if args.command == "run":
        return run_analyses(args.runs_root, args.out, args.wait)
    if not any(args.out.glob("*.json")):
        print(f"error: {args.out} holds no analysis (.json); write them with "
              "`bench/offline_table.py run` first.", file=sys.stderr)
        return 2
    print(format_table(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
