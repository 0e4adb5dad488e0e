"""The markdown of a benchmark report: its tables and sections, and the headline table that
README.md shows.

Pure formatting: called by reports/report.py with the runs' summaries (reports/scores.py) and
the summary written beside the report; reads and writes no file, except that the link to a
carried environment's report looks for that report beside its summary.
"""

from __future__ import annotations

import datetime
import functools
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from reports import reference
from reports.benchmark import ROOT, Benchmark, display
from reports.reference import WINDOW
from reports.scores import CURVE_POINTS, RunSummary, group, pairs, permutation_p, spread

Groups = dict[tuple[str, str], list[RunSummary]]  # (environment, algorithm) -> runs by seed
# A section of a report's notes headed so is the report's first paragraph, under its title.
ANSWER_HEADING = "## Answer"


def _num(x: float, digits: int | None = None) -> str:
    """Scores: no decimal from 100 up, one below (or `digits`)."""
    if digits is None:
        digits = 0 if abs(x) >= 100 else 1
    return f"{x:.{digits}f}"


def _frames(n: float) -> str:
    """Frame counts with three significant digits: 500, 7.5k, 17.8k, 1.25M."""
    if abs(n) >= 1e6:
        return f"{n / 1e6:.3g}M"
    if abs(n) >= 1e3:
        return f"{n / 1e3:.3g}k"
    return f"{n:.0f}"


def _cell(values: Sequence[float | None], fmt: Callable[[float], str] | None = None) -> str:
    """`mean ± std (min–max)`, plus `[n=k]` when only k of the values are present. One number
    format for the whole cell: no decimal when its largest number is 100 or more."""
    s = spread(values)
    if s is None:
        return "-"
    if fmt is None:
        digits = 0 if max(abs(s["mean"]), abs(s["min"]), abs(s["max"])) >= 100 else 1
        fmt = functools.partial(_num, digits=digits)
    text = f"{fmt(s['mean'])} ± {fmt(s['std'])} ({fmt(s['min'])}–{fmt(s['max'])})"
    if s["n"] < len(values):
        text += f" [n={s['n']}]"
    return text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def format_report(bench: Benchmark, summaries: Sequence[RunSummary],
                  figures: Sequence[str | os.PathLike], window: float = WINDOW,
                  when: str | None = None, notes: str = "",
                  pending: Sequence[str | os.PathLike] = (),
                  summary: dict | None = None, commit: str | None = None,
                  committed: dict | None = None) -> str:
    """The markdown report (figures given as paths relative to the report's folder; `notes`:
    markdown put in after the first paragraph; `pending`: run folders not started or without an
    evaluation yet, left out of every number; `summary`: the summary_json written beside it,
    whose carried environments and aggregate block get a section; `commit`: the code's commit,
    named in the first paragraph (default: the checkout's now); `committed`: the committed
    summary that a rerun's runs are compared with, in a section of their own). Carried runs
    (RunSummary.carried_from) are in the score, threshold and mean-score tables and the pairs,
    marked, but not in the hours, the curves or the list of runs."""
    groups = group(summaries)
    own = {key: runs for key, runs in groups.items() if runs[0].carried_from is None}
    when = when or datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    commit = commit or reference.current_commit() or "unknown (not a git checkout)"
    lines = _opening(bench, summaries, when, commit, notes, pending)
    lines += _score_tables(bench, groups, window)
    lines += _threshold_table(bench, groups)
    lines += _mean_score_tables(groups)
    if committed is not None:
        lines += _committed_section(bench, own, committed)
    if summary is not None:
        profile = [f for f in figures if str(f).endswith("_profile.png")]
        lines += (_carried_section(summary, Path(bench.report).parent)
                  + _aggregate_section(summary, profile))
        figures = [f for f in figures if f not in profile]
    lines += _time_table(own) + _frame_cost(bench, own)
    lines += _curves_section(figures)
    lines += _runs_table(own)
    return "\n".join(lines) + "\n"


def _opening(bench: Benchmark, summaries: Sequence[RunSummary], when: str, commit: str,
             notes: str, pending: Sequence[str | os.PathLike]) -> list[str]:
    """The title, what produced the report from which runs, the runs carried into it and those
    not yet in it, the notes and the configs."""
    carried = [s for s in summaries if s.carried_from is not None]
    summaries = [s for s in summaries if s.carried_from is None]
    unfinished = [s for s in summaries if not s.finished]
    answer, notes = split_answer(notes)
    lines = [f"# Sample efficiency: {bench.name}", ""] + ([answer, ""] if answer else []) + [
             f"Produced by `{bench.command}` at commit `{commit}` on {when} from "
             f"{len(summaries)} run(s) of "
             f"{len(bench.configs)} config(s) x {bench.seeds} seed(s) "
             f"({_seed_text(bench)}), {_budget_text(bench, summaries)} (runs under "
             f"`{bench.output_root}`).", ""]
    if carried:
        lines += _carried_runs_paragraph(carried, Path(bench.report).parent)
    if unfinished:
        lines += [f"**{len(unfinished)} run(s) have not reached the budget yet** (marked "
                  f"`unfinished` below); run the same command again to resume them.", ""]
    if pending:
        lines += [f"**{len(pending)} run(s) have not started or have no evaluation yet**; they "
                  f"are left out of every number below (a partial report):", ""]
        lines += [f"- `{display(p)}`" for p in pending] + [""]
    if notes.strip():
        lines += [notes.strip(), ""]
    return lines + ["Configs:", ""] + [f"- `{display(c)}`" for c in bench.configs] + [""]


_LINK = re.compile(r"\]\(([^()\s#]+)(#[^()\s]*)?\)")  # a markdown link's target, anchor apart


def relink(text: str, written_in: Path, read_from: Path) -> str:
    """`text`, written in folder `written_in`, with its relative links changed to resolve from
    folder `read_from` (web addresses and absolute paths stay)."""
    def moved(m: re.Match) -> str:
        target = m.group(1)
        if "://" in target or target.startswith(("/", "mailto:")):
            return m.group(0)
        new = os.path.relpath(os.path.abspath(written_in / target), os.path.abspath(read_from))
        return f"]({Path(new).as_posix()}{m.group(2) or ''})"
    same = os.path.abspath(written_in) == os.path.abspath(read_from)
    return text if same else _LINK.sub(moved, text)


def split_answer(notes: str) -> tuple[str, str]:
    """The body of the notes' ANSWER_HEADING section, which the report puts right under its
    title as its first paragraph, and the notes without that section."""
    lines = notes.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == ANSWER_HEADING), None)
    if start is None:
        return "", notes
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    return "\n".join(lines[start + 1:end]).strip(), "\n".join(lines[:start] + lines[end:])


def _carried_runs_paragraph(carried: Sequence[RunSummary], report_dir: Path) -> list[str]:
    """Which algorithms were carried into this report's environments, and from where."""
    by_source: dict[tuple[str, str], list[str]] = {}
    for s in carried:
        names = by_source.setdefault((s.carried_from, s.env), [])
        if s.algo not in names:
            names.append(s.algo)
    parts = [f"{', '.join(f'`{a}`' for a in algos)} on {env} from "
             f"[{Path(source).stem}]({_carried_link({'carried_from': source}, report_dir)})"
             for (source, env), algos in by_source.items()]
    return [f"**Carried from earlier reports** (marked `carried` in the tables): "
            f"{'; '.join(parts)}. Their runs' numbers are those of their own report, copied "
            f"unchanged (same configs, budget and marks); they enter the score, threshold and "
            f"mean-score tables, the pairs and the aggregate beside this report's runs, not the "
            f"hours, the curves or the list of runs.", ""]


def _label(algo: str, runs: Sequence[RunSummary]) -> str:
    """An algorithm's name in a table: marked when its runs were carried."""
    return f"{algo} (carried)" if runs[0].carried_from is not None else algo


def _score_tables(bench: Benchmark, groups: Groups, window: float) -> list[str]:
    """The greedy score at the table's frame counts: one table, or one per environment when
    their frame counts differ."""
    lines = ["## Greedy score at fixed frame counts", "",
             f"Score of one run at F frames: the mean return of its greedy evaluation "
             f"episodes that ended after {1 - window:g} F and by F frames. Each cell: mean ± "
             f"standard deviation over seeds (min–max); `[n=k]` when only k seeds have a value "
             f"there (the others stopped earlier or had no evaluation in that window)"
             + (f"; a score needs at least {bench.min_episodes} episodes in its window"
                if bench.min_episodes > 1 else "") + ".", ""]
    tables: dict[tuple[int, ...], list[str]] = {}
    for env in sorted({env for env, _ in groups}):
        tables.setdefault(bench.budget(env)[1], []).append(env)
    for marks, table_envs in tables.items():
        header = ["environment", "algorithm", "seeds"] + [_frames(m) for m in marks]
        rows = [[env, _label(algo, runs), str(len(runs))]
                + [_cell([r.scores[i] for r in runs]) for i in range(len(marks))]
                for (env, algo), runs in groups.items() if env in table_envs]
        lines += _table(header, rows) + [""]
    return lines


def _threshold_table(bench: Benchmark, groups: Groups) -> list[str]:
    """Frames to reach each environment's threshold, per algorithm and seed."""
    lines = ["## Frames to reach the threshold", ""]
    if not any(env in bench.thresholds for env, _ in groups):
        return lines + ["No threshold was given (use `--threshold ENV=SCORE`).", ""]
    lines += ["The first frame count at which a run's score (as defined above) is at least "
              "the threshold. `reached`: seeds that got there; mean over those seeds; per "
              "seed in seed order, `-` for not reached.", ""]
    rows = []
    for (env, algo), runs in groups.items():
        if env not in bench.thresholds:
            continue
        hits = [r.to_threshold for r in runs]
        s = spread(hits)
        rows.append([env, _label(algo, runs), _num(bench.thresholds[env]),
                     f"{s['n'] if s else 0}/{len(runs)}",
                     _frames(s["mean"]) if s else "-",
                     ", ".join(_frames(h) if h is not None else "-" for h in hits)])
    return lines + _table(["environment", "algorithm", "threshold", "reached", "mean frames",
                           "per seed"], rows) + [""]


def _mean_score_tables(groups: Groups) -> list[str]:
    """The mean score over the budget per (environment, algorithm), then every pair's
    difference and permutation p."""
    lines = ["## Mean score over the budget", "",
             f"A run's mean score over the budget: the mean of its scores (as above) at "
             f"{CURVE_POINTS} evenly spaced frame counts up to the budget "
             f"(those with a value), i.e. the area under its learning curve divided by the "
             f"budget. Mean ± std (min–max) over seeds.", ""]
    rows = [[env, _label(algo, runs), str(len(runs)), _cell([r.mean_score for r in runs])]
            for (env, algo), runs in groups.items()]
    lines += _table(["environment", "algorithm", "seeds", "mean score"], rows) + [""]
    lines += ["Pairwise: the difference of two algorithms' mean scores over the budget (averaged "
              "over seeds) and its two-sided permutation p-value over seeds: the share of the "
              "ways to relabel the runs as one algorithm or the other that give a difference at "
              "least as large. Small p: the seeds separate the two; with n seeds each, p cannot "
              "go below 2 / C(2n, n) (0.1 for 3 seeds, 0.002 for 6).", ""]
    rows = [[env, pair["a"], pair["b"], _num(pair["diff"]), f"{pair['p']:.3f}",
             f"{pair['n_a']} / {pair['n_b']}"]
            for env in sorted({env for env, _ in groups}) for pair in pairs(groups, env)]
    return lines + _table(["environment", "A", "B", "A - B", "p", "seeds"], rows) + [""]


def _committed_section(bench: Benchmark, groups: Groups, committed: dict) -> list[str]:
    """A rerun's runs beside the committed report's: the mean score over the budget of each
    (environment, algorithm) in both, their difference and its permutation p over seeds."""
    source = bench.committed_summary()
    link = Path(os.path.relpath(source.with_suffix(".md"), Path(bench.report).parent))
    lines = ["## Against the committed report", "",
             f"These runs re-ran the committed benchmark ([{source.stem}]({link.as_posix()}), "
             f"left unchanged) with the same configs and seeds; runs are not deterministic (the "
             f"processes' timing varies), so the two agree only as two samples of the same "
             f"algorithm do. Mean score over the budget, mean ± std (min–max) over seeds; the "
             f"difference (this report's minus the committed one's) and its two-sided "
             f"permutation p over seeds.", ""]
    rows = []
    for (env, algo), runs in groups.items():
        block = committed["environments"].get(env, {})
        entry = block.get("algorithms", {}).get(algo) if "carried_from" not in block else None
        theirs = [v.get("mean_score") for v in entry["seeds"].values()] if entry else []
        ours = [r.mean_score for r in runs]
        a, b = [v for v in ours if v is not None], [v for v in theirs if v is not None]
        compared = (a and b)
        rows.append([env, algo, _cell(theirs) if entry else "not in the committed report",
                     _cell(ours), _num(float(np.mean(a)) - float(np.mean(b))) if compared
                     else "-", f"{permutation_p(a, b):.3f}" if compared else "-",
                     f"{len(a)} / {len(b)}"])
    return lines + _table(["environment", "algorithm", "committed", "this report",
                           "difference", "p", "seeds"], rows) + [""]


def _time_table(groups: Groups) -> list[str]:
    """Hours of training per (environment, algorithm)."""
    lines = ["## Wall-clock time", "",
             "Hours of training per run (the largest `hours` in its greedy.csv: wall-clock "
             "time up to its last evaluation, not counting time stopped between an interruption "
             "and its resume); mean ± std (min–max) over seeds.", ""]
    rows = [[env, algo, _cell([r.hours for r in runs], lambda h: f"{h:.2f}"),
             _frames(min(r.last_frames for r in runs))]
            for (env, algo), runs in groups.items()]
    return lines + _table(["environment", "algorithm", "hours",
                           "last evaluation (fewest frames)"], rows) + [""]


def _curves_section(figures: Sequence[str | os.PathLike]) -> list[str]:
    lines = ["## Learning curves", "",
             "Line: mean over seeds; shaded: min–max across seeds (plot.py).", ""]
    for fig in figures:
        kind = "hours" if str(fig).endswith("_hours.png") else "frames"
        lines += [f"![greedy score against {kind}]({Path(fig).as_posix()})", ""]
    return lines


def _runs_table(groups: Groups) -> list[str]:
    rows = [[env, algo, str(r.seed) if r.seed is not None else "-",
             "done" if r.finished else "unfinished", _frames(r.last_frames), str(r.episodes),
             f"{r.hours:.2f}", f"`{display(r.path)}`"]
            for (env, algo), runs in groups.items() for r in runs]
    return ["## Runs", ""] + _table(["environment", "algorithm", "seed", "state",
                                     "last evaluation", "episodes", "hours", "folder"], rows)


def _frame_cost(bench: Benchmark, groups: Groups) -> list[str]:
    """A line per environment: what a frame of the headline algorithm cost against a frame of
    its backbone (mean over seeds of hours per frame at the last evaluation)."""
    if bench.headline is None:
        return []
    algo, backbone = bench.headline
    parts = []
    for env in sorted({env for env, _ in groups}):
        a, b = groups.get((env, algo)), groups.get((env, backbone))
        if not a or not b:
            continue
        cost = [float(np.mean([r.hours / max(r.last_frames, 1) for r in runs]))
                for runs in (a, b)]
        if cost[1] > 0:
            parts.append(f"{env} {cost[0] / cost[1]:.1f}x ({cost[0] * 3.6e6:.0f} against "
                         f"{cost[1] * 3.6e6:.0f} ms per frame)")
    if not parts:
        return []
    return [f"What a frame costs on this machine: a {algo} frame against a {backbone} frame "
            f"(wall-clock time per frame up to the last evaluation, mean over seeds, on the "
            f"machine and with the parallelism the runs had): " + "; ".join(parts) + ".", ""]


def _carried_section(summary: dict, report_dir: Path) -> list[str]:
    """The environments carried from earlier reports: their mean scores over the budget (links
    relative to `report_dir`, the report's folder)."""
    carried = {env: block for env, block in summary["environments"].items()
               if "carried_from" in block}
    if not carried:
        return []
    lines = ["## Tasks carried from earlier reports", "",
             "These environments' runs were reported before; their per-seed numbers are copied "
             "unchanged into this report's summary for the aggregate below. Mean score over the "
             "budget, mean ± std (min–max) over seeds, and the pairwise p-values of their own "
             "report.", ""]
    rows = []
    for env, block in sorted(carried.items()):
        for algo, entry in block["algorithms"].items():
            values = [s.get("mean_score") for s in entry["seeds"].values()]
            rows.append([env, algo, str(len(values)), _cell(values),
                         f"[{Path(block['carried_from']).stem}]"
                         f"({_carried_link(block, report_dir)})"])
    lines += _table(["environment", "algorithm", "seeds", "mean score", "from"], rows) + [""]
    rows = [[env, p["a"], p["b"], _num(p["diff"]), f"{p['p']:.3f}"]
            for env, block in sorted(carried.items()) for p in block.get("pairs", [])]
    lines += _table(["environment", "A", "B", "A - B", "p"], rows) + [""]
    return lines


def _carried_link(block: dict, report_dir: Path) -> str:
    """The report a carried environment came from (its .md beside the summary, else the
    summary), relative to `report_dir`."""
    source = ROOT / block["carried_from"]
    if source.with_suffix(".md").is_file():
        source = source.with_suffix(".md")
    return Path(os.path.relpath(source, report_dir)).as_posix()


def headline_table(summary: dict) -> list[str]:
    """The table over the aggregate's tasks that README.md shows (a test keeps the two equal):
    per algorithm, its mean score over the budget on each task (mean ± std over seeds, with the
    number of seeds when some are missing) and its IQM of normalised scores over the complete
    tasks; then each pair's probability of improvement. [] without an aggregate block."""
    block = summary.get("aggregate")
    if not block:
        return []
    envs = summary["environments"]
    tasks = list(block["normalisation"])
    seeds = len(summary["seeds"])
    header = ["algorithm"] + [f"{t}, {_frames(envs[t]['marks'][-1])} frames" if t in envs
                              else t for t in tasks]
    header.append(f"IQM, normalised, over {len(block['tasks'])} tasks" if block["tasks"]
                  else "IQM, normalised")
    rows = []
    for algo in block["algorithms"]:
        row = [f"`{algo}`"]
        for t in tasks:
            entry = envs.get(t, {}).get("algorithms", {}).get(algo)
            values = [v.get("mean_score") for v in entry["seeds"].values()] if entry else []
            s = spread(values)
            if s is None:
                row.append("no finished run")
                continue
            cell = f"{s['mean']:,.0f} ± {s['std']:,.0f}"
            row.append(cell if s["n"] == seeds else f"{cell} ({s['n']} of {seeds} seeds)")
        iqm = block["iqm"].get(algo)
        row.append(f"{iqm['estimate']:.2f} [{iqm['ci'][0]:.2f}, {iqm['ci'][1]:.2f}]" if iqm
                   else "-")
        rows.append(row)
    lines = _table(header, rows) + [""]
    for p in block["probability_of_improvement"]:
        lines.append(f"- Probability of improvement of `{p['a']}` over `{p['b']}` over "
                     f"{len(block['tasks'])} tasks ({', '.join(block['tasks'])}): "
                     f"**{p['estimate']:.2f}** [{p['ci'][0]:.2f}, {p['ci'][1]:.2f}]")
    if block["probability_of_improvement"]:
        lines.append("")
    return lines


def _aggregate_section(summary: dict, profile: Sequence[str | os.PathLike]) -> list[str]:
    """Probability of improvement, IQM and the performance profile (reports/aggregate.py)."""
    block = summary.get("aggregate")
    if not block:
        return []
    lines = ["## Across tasks", "",
             f"Computed with rliable (Agarwal et al., NeurIPS 2021) from each run's mean score "
             f"over the budget, normalised per task as (score - low) / (high - low); "
             f"{block['confidence']:.0%} intervals from a stratified bootstrap over seeds "
             f"({block['reps']:,} replications, seed {block['seed']}). The probability of "
             f"improvement of A over B is the chance that a random run of A beats a random run "
             f"of B on a random task (ties count half); it does not depend on the "
             f"normalisation. The IQM is the mean of the middle 50% of all runs' normalised "
             f"scores. `reports.aggregate.recompute` computes the same numbers from the summary "
             f"(`.json`) beside this report.", ""]
    if block.get("pending_tasks"):
        lines += [f"**Not yet in the aggregate** (some seeds have no mean score yet): "
                  f"{', '.join(block['pending_tasks'])}.", ""]
    lines += ["Mean score over the budget on each task, mean ± std over seeds (of the seeds "
              "finished so far where fewer), and the aggregate:", ""]
    lines += headline_table(summary)
    if not block["tasks"]:
        return lines + ["No task has every seed of every algorithm yet.", ""]
    rows = [[t, _num(lo), _num(hi)] for t, (lo, hi) in block["normalisation"].items()
            if t in block["tasks"]]
    lines += _table(["task", "low (score 0)", "high (score 1)"], rows) + [""]
    rows = [[p["a"], p["b"], f"{p['estimate']:.2f}", f"[{p['ci'][0]:.2f}, {p['ci'][1]:.2f}]"]
            for p in block["probability_of_improvement"]]
    lines += [f"Over {len(block['tasks'])} tasks ({', '.join(block['tasks'])}):", ""]
    lines += _table(["A", "B", "P(A > B)", f"{block['confidence']:.0%} interval"], rows) + [""]
    by_task = block.get("probability_of_improvement_by_task", {})
    if len(by_task) > 1:
        lines += ["On each task alone (the same statistic over that task's seeds, whose mean "
                  "over the tasks is the number above; the permutation p of the difference in "
                  "mean score is the one in the tables above):", ""]
        rows = []
        for t, entries in by_task.items():
            p_values = {(q["a"], q["b"]): q["p"]
                        for q in summary["environments"].get(t, {}).get("pairs", [])}
            for p in entries:
                p_value = p_values.get((p["a"], p["b"]), p_values.get((p["b"], p["a"])))
                rows.append([t, p["a"], p["b"], f"{p['estimate']:.2f}",
                             f"[{p['ci'][0]:.2f}, {p['ci'][1]:.2f}]",
                             "-" if p_value is None else f"{p_value:.3f}"])
        lines += _table(["task", "A", "B", "P(A > B)", f"{block['confidence']:.0%} interval",
                         "permutation p"], rows) + [""]
    rows = [[a, f"{v['estimate']:.3f}", f"[{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]"]
            for a, v in block["iqm"].items()]
    lines += _table(["algorithm", "IQM (normalised)", f"{block['confidence']:.0%} interval"],
                    rows) + [""]
    for f in profile:
        lines += [f"![performance profile]({Path(f).as_posix()})", ""]
    return lines


def _seed_text(bench: Benchmark) -> str:
    seeds = bench.seed_list()
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"


def _budget_text(bench: Benchmark, summaries: Sequence[RunSummary]) -> str:
    envs = sorted({s.env for s in summaries})
    budgets = {bench.budget(env)[0] for env in envs} or {bench.total_frames}
    if len(budgets) == 1:
        return f"{_frames(budgets.pop())} frames each"
    return ", ".join(f"{_frames(bench.budget(env)[0])} frames on {env}" for env in envs)
