"""Writing a benchmark report: the report, its summary and figures, the committed copies of its
runs, and README.md's headline table.

Run by bench/sample_efficiency.py after its runs (or alone, `--report-only`), in the process that
drives the benchmark; it reads run folders and never writes into one. Reads, per run folder
`<output_root>/<ENV>/<EXPERIMENT>.seed<S>/` or its committed copy under `reference_runs`
(reports/reference.py's layout): `log/*.greedy.csv`, `log/hps.json` and `state/finished.json`
(reports/runs.py). Writes, each whole (a temporary name, then a rename):
- the report (markdown, reports/markdown.py) and beside it the machine-readable summary
  `<report stem>.json` (`summary_json`), the learning curves `<report stem>_curves_frames.png`
  and `<report stem>_curves_hours.png` (drawn by the caller's `draw_curves`: plot.py's, a
  command this package does not import) and, with an aggregate across tasks, the performance
  profile `<report stem>_profile.png` (reports/aggregate.py);
- the copies of the runs into `reference_runs` (reference.export_run), when the benchmark keeps
  them;
- the table between the markers of `readme`, when the benchmark names one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import config as config_lib
import util
from cluster.plan import SweepError, plan_runs
from reports import aggregate, reference
from reports.benchmark import Benchmark, BenchmarkError, display
from reports.markdown import format_report, headline_table, relink
from reports.reference import WINDOW
from reports.runs import greedy_csv_path, run_info
from reports.scores import RunSummary, group, pairs, summarize_run

# draw_curves(run folders, base path `<report stem>_curves.png`) -> the figures' paths
DrawCurves = Callable[[Sequence[Path], Path], Sequence[str | os.PathLike]]


def summary_json(bench: Benchmark, summaries: Sequence[RunSummary],
                 carried: dict[str, dict] | None = None) -> dict:
    """The machine-readable summary written beside the report (`<report stem>.json`):

    {"headline": {"algorithm": LABEL, "backbone": LABEL} or null, "seeds": [...],
     "environments": {ENV: {"marks": [F, ...], "algorithms": {LABEL: {"config": PATH,
         "seeds": {"S": {"scores": {"F": score or null, ...}, "frames_to_threshold": F or null,
         "mean_score": x or null}}}}, "pairs": [{"a": LABEL, "b": LABEL, "diff": x, "p": x}]}},
     "aggregate": {...}}

    with the report's numbers (scores at the marks, frames to the threshold, mean score over the
    budget; pairs as in the report's pairwise table). `config` (relative to the project root)
    is there when the runs came from the benchmark's own configs. An algorithm carried into an
    environment of this benchmark (`bench.carried_algorithms`) has its runs' numbers as its
    summary gives them, with `carried_from` (that summary) and its `config` there. The
    environments of `carried` (committed summaries of earlier reports, `bench.carried`) are
    added unchanged, each with `carried_from`. `aggregate` (when the benchmark has an
    AggregateSpec) is aggregate.aggregate_block over the spec's tasks on which every algorithm
    it names has every seed, computed from this file's own per-seed `mean_score`s; the other
    tasks are listed as `pending_tasks`.
    """
    groups = group(summaries)
    configs = _configs_by_run(bench)
    environments: dict[str, dict] = {}
    for env in sorted({env for env, _ in groups}):
        marks = bench.budget(env)[1]
        algorithms = {algo: _algorithm_entry(runs, marks, configs)
                      for (e, algo), runs in groups.items() if e == env}
        environments[env] = {
            "marks": list(marks), "algorithms": algorithms,
            "pairs": [{k: pair[k] for k in ("a", "b", "diff", "p")}
                      for pair in pairs(groups, env)]}
    for env, block in (carried or {}).items():
        environments.setdefault(env, block)
    headline = ({"algorithm": bench.headline[0], "backbone": bench.headline[1]}
                if bench.headline else None)
    out = {"headline": headline, "seeds": bench.seed_list(), "environments": environments}
    if bench.aggregate is not None:
        out["aggregate"] = _aggregate(bench, environments)
    return out


def _algorithm_entry(runs: Sequence[RunSummary], marks: Sequence[int],
                     configs: dict[tuple[str, str], str]) -> dict:
    """One algorithm's block of an environment in the summary: its config when known, where
    carried runs came from, and each seed's numbers."""
    seeds = {"seeds": {str(r.seed): {"scores": {str(m): r.scores[i] for i, m in enumerate(marks)},
                                     "frames_to_threshold": r.to_threshold,
                                     "mean_score": r.mean_score}
                       for r in runs}}
    first = runs[0]
    if first.carried_from is not None:
        return {"carried_from": first.carried_from,
                **({"config": first.config} if first.config else {}), **seeds}
    config = configs.get((first.env, Path(first.path).name))
    return {"config": config, **seeds} if config is not None else seeds


def _aggregate(bench: Benchmark, environments: dict) -> dict:
    """The aggregate block over the complete tasks (every algorithm, every seed)."""
    spec = bench.aggregate
    names = set(spec.algorithms) | {a for pair in spec.pairs for a in pair}
    seeds = {str(s) for s in bench.seed_list()}

    def complete(task: str) -> bool:
        algorithms = environments.get(task, {}).get("algorithms", {})
        return all(seeds <= {s for s, v in algorithms.get(a, {}).get("seeds", {}).items()
                             if v.get("mean_score") is not None} for a in names)

    tasks = tuple(t for t in spec.tasks if complete(t))
    pending = [t for t in spec.tasks if t not in tasks]
    if tasks:
        block = aggregate.aggregate_block(environments, dataclasses.replace(spec, tasks=tasks))
    else:  # nothing to aggregate yet: the block names no task (no profile is drawn)
        block = aggregate.empty_block(dataclasses.replace(spec, tasks=()))
    return dict(block, pending_tasks=pending)


def _configs_by_run(bench: Benchmark) -> dict[tuple[str, str], str]:
    """{(environment, run folder name): its config relative to the project root} of the
    benchmark's planned runs."""
    try:
        planned = plan_runs(bench.configs, bench.seed_list(), bench.output_root)
    except (SweepError, config_lib.ConfigError):
        return {}
    return {(r.run.path.parent.name, r.run.path.name): display(r.config) for r in planned}


# ------------------------------------------------------------------------------ reading


def _read_notes(bench: Benchmark) -> str:
    """The notes, their relative links pointed from the report's folder (a report written to
    an output root links to the same files as the committed one)."""
    if not bench.notes:
        return ""
    try:
        return relink(Path(bench.notes).read_text(), Path(bench.notes).parent,
                      Path(bench.report).parent)
    except OSError as e:
        raise BenchmarkError(f"The report's notes {bench.notes} cannot be read "
                             f"({e.strerror}); restore the file or drop the notes.") from None


def _read_carried(bench: Benchmark) -> dict[str, dict]:
    """{ENV: its block} of the committed summaries the benchmark carries, each block marked
    with the summary it came from."""
    carried: dict[str, dict] = {}
    for path in bench.carried:
        data = util.read_json(path) if Path(path).is_file() else None
        if not isinstance(data, dict) or not isinstance(data.get("environments"), dict):
            raise BenchmarkError(f"The carried summary {display(path)} is missing or has no "
                                 f"environments; restore it from git.")
        for env, block in data["environments"].items():
            carried[env] = dict(block, carried_from=display(path))
    return carried


def _read_carried_algorithms(bench: Benchmark) -> list[RunSummary]:
    """The runs of bench.carried_algorithms, as RunSummary values marked with the summary they
    come from. Raises BenchmarkError (one sentence) for a summary, environment or algorithm
    that is not there, or an environment whose marks differ from this benchmark's."""
    out = []
    for path, env, algorithms in bench.carried_algorithms:
        data = util.read_json(path) if Path(path).is_file() else None
        block = data.get("environments", {}).get(env) if isinstance(data, dict) else None
        if not isinstance(block, dict):
            raise BenchmarkError(f"The carried summary {display(path)} is missing or has no "
                                 f"{env}; restore it from git or fix the preset's "
                                 f"carried_algorithms.")
        marks = bench.budget(env)[1]
        if tuple(block["marks"]) != tuple(marks):
            raise BenchmarkError(f"{display(path)} scores {env} at other frame counts than this "
                                 f"benchmark (another budget or marks); carry {env} from a "
                                 f"report with the same budget and marks.")
        for algo in algorithms:
            entry = block["algorithms"].get(algo)
            if entry is None:
                raise BenchmarkError(f"{display(path)} has no algorithm {algo!r} on {env} (it "
                                     f"has {', '.join(sorted(block['algorithms']))}); fix the "
                                     f"preset's carried_algorithms.")
            out += [RunSummary(
                path=Path(path), env=env, algo=algo, seed=int(seed), finished=True,
                last_frames=0, episodes=0, hours=0.0,
                scores=tuple(run["scores"].get(str(m)) for m in marks),
                mean_score=run.get("mean_score"), to_threshold=run.get("frames_to_threshold"),
                carried_from=display(path), config=entry.get("config"))
                for seed, run in entry["seeds"].items()]
    return out


def _with_carried(bench: Benchmark, own: list[RunSummary],
                  carried: list[RunSummary]) -> list[RunSummary]:
    """This benchmark's runs and the carried ones; BenchmarkError when an algorithm is both."""
    ran = {(s.env, s.algo) for s in own}
    both = sorted({(env, algo) for _, env, algos in bench.carried_algorithms
                   for algo in algos} & ran)
    if both:
        env, algo = both[0]
        raise BenchmarkError(f"{algo} on {env} is both run by this benchmark and carried from "
                             f"an earlier report; drop it from the preset's configs or its "
                             f"carried_algorithms.")
    return own + carried


def collect_runs(bench: Benchmark, window: float = WINDOW, partial: bool = False,
                 prefer_runs: bool | None = None) -> tuple[list[RunSummary], list[Path]]:
    """(summaries of the runs with evaluations, pending run folders), read from
    bench.sources(prefer_runs): a run's folder under the output root, else its committed copy
    (a published report reads the copies write_report has just refreshed). Raises
    BenchmarkError for a missing or unevaluated run unless `partial`."""
    runs = bench.sources(prefer_runs)
    missing = [r for r in runs if not r.is_dir()]
    if missing and not partial:
        raise BenchmarkError(f"{len(missing)} of the {len(runs)} run folder(s) do not exist "
                             f"(e.g. {missing[0]}); run the benchmark without --report-only "
                             f"first (or add --partial).")
    summaries, pending = [], list(missing)
    for r in runs:
        if r in missing:
            continue
        total, marks = bench.budget(run_info(r).env)
        try:
            summaries.append(summarize_run(r, marks, bench.thresholds, total, window,
                                           bench.min_episodes))
        except BenchmarkError:
            if not partial:
                raise
            pending.append(r)
    if not summaries:
        raise BenchmarkError(f"None of the {len(runs)} run(s) has an evaluation yet (e.g. "
                             f"{runs[0]}); run the benchmark first.")
    return summaries, pending


def export_runs(bench: Benchmark, commit: str | None = None) -> list[Path]:
    """When publishing, copy every planned run under the output root that has an evaluation into
    `bench.reference_runs` (reference.export_run); the copies' folders. A live run is read at
    one moment: the copy is what the report then counts."""
    if not bench.reference_runs or not bench.publish:
        return []
    keep = Path(bench.reference_runs).resolve()
    commit = commit or reference.current_commit()
    return [reference.export_run(r, keep, commit) for r in bench.run_dirs()
            if r.is_dir() and greedy_csv_path(r) is not None
            and greedy_csv_path(r).stat().st_size > 0]


# ------------------------------------------------------------------------------ writing


def write_report(bench: Benchmark, draw_curves: DrawCurves, window: float = WINDOW,
                 when: str | None = None, partial: bool = False) -> tuple[Path, list[Path]]:
    """Compute the report from the runs (bench.sources) and write it with its summary and
    figures (the learning curves drawn by `draw_curves`) to `bench.report`. When publishing,
    first copy the runs under the output root into `bench.reference_runs` and count the copies,
    and afterwards rewrite `bench.readme`'s table; for a rerun, compare the runs with the
    committed summary.

    Returns (report path, figure paths). Raises BenchmarkError, before writing the report, its
    figures or its summary (or refreshing a copy), when a run folder is missing or a run has no
    evaluations; with `partial`, such runs are listed as pending instead (an error only when no
    run has evaluations). A publication that would drop a run the committed summary holds is
    refused before anything is written.
    """
    notes = _read_notes(bench)
    carried = _read_carried(bench)
    carried_runs = _read_carried_algorithms(bench)
    committed = _read_committed(bench) if bench.rerun or bench.publish else None
    readme = _readme_table_span(bench) if bench.publish else None  # checked before writing
    if bench.publish and committed is not None:
        _check_nothing_dropped(bench, committed, window)
    commit = reference.current_commit()  # before the copies change tracked files ("-dirty")
    export_runs(bench, commit)
    summaries, pending = collect_runs(bench, window, partial)
    runs = [s.path for s in summaries]
    summaries = _with_carried(bench, summaries, carried_runs)
    report = Path(bench.report)
    figures = [Path(f) for f in draw_curves(runs, report.with_name(f"{report.stem}_curves.png"))]
    summary = summary_json(bench, summaries, carried)
    if "aggregate" in summary and summary["aggregate"]["tasks"]:
        spec = aggregate.spec_of(summary["aggregate"])
        profile = report.with_name(f"{report.stem}_profile.png")
        figures.append(Path(aggregate.draw_performance_profile(summary["environments"], spec,
                                                               profile)))
    relative = [os.path.relpath(f, report.parent) for f in figures]
    text = format_report(bench, summaries, relative, window, when, notes, pending, summary,
                         commit, committed if bench.rerun else None)
    util.atomic_write_text(report, text)
    summary_path = report.with_suffix(".json")
    util.atomic_write_text(summary_path, json.dumps(summary, indent=1) + "\n")
    umask = os.umask(0)  # the temporary files were private (0600): give them the usual mode
    os.umask(umask)
    for path in (report, summary_path):
        os.chmod(path, 0o666 & ~umask)
    if readme is not None:
        _write_readme_table(bench, summary)
    return report, figures


def _read_committed(bench: Benchmark) -> dict | None:
    """The committed summary (bench.committed_summary()); None when there is none. Raises
    BenchmarkError for a rerun without one (it has nothing to compare with)."""
    path = bench.committed_summary()
    data = util.read_json(path) if path is not None and path.is_file() else None
    if isinstance(data, dict) and isinstance(data.get("environments"), dict):
        return data
    if bench.rerun:
        raise BenchmarkError(f"--rerun compares the runs with the committed summary "
                             f"{display(path) if path else '(none)'}, which does not exist; "
                             f"run without --rerun.")
    return None


def _check_nothing_dropped(bench: Benchmark, committed: dict, window: float) -> None:
    """Refuse (BenchmarkError) a publication whose summary would lose a run that the committed
    summary has a mean score for: a run not finished here, or missing, with no finished copy."""
    summaries, _ = collect_runs(bench, window, partial=True, prefer_runs=True)
    have = {(s.env, s.algo, str(s.seed)) for s in summaries if s.mean_score is not None}
    held = [(env, algo, seed) for env, block in committed["environments"].items()
            if "carried_from" not in block
            for algo, entry in block["algorithms"].items() if "carried_from" not in entry
            for seed, run in entry["seeds"].items() if run.get("mean_score") is not None]
    lost = [key for key in held if key not in have]
    if lost:
        env, algo, seed = lost[0]
        raise BenchmarkError(
            f"Publishing would drop {len(lost)} finished run(s) that "
            f"{display(bench.committed_summary())} holds (e.g. {algo} seed {seed} on {env}, "
            f"finished neither under the output root nor in the committed copies); finish "
            f"them, or leave out --publish to write the report to the output root.")


def _readme_table_span(bench: Benchmark) -> tuple[str, int, int] | None:
    """(text of bench.readme, start, end) of the lines between its table markers (see
    Benchmark.readme); None without a readme. Raises BenchmarkError when a marker is missing."""
    if not bench.readme:
        return None
    path = Path(bench.readme)
    try:
        text = path.read_text()
    except OSError as e:
        raise BenchmarkError(f"{display(path)} cannot be read ({e.strerror}); restore it from "
                             f"git.") from None
    opening, closing = f"<!-- {bench.name} table", f"<!-- end of {bench.name} table -->"
    first = text.find(opening)
    end = text.find(closing, first) if first >= 0 else -1
    if first < 0 or end < 0:
        raise BenchmarkError(f"{display(path)} has no line starting with {opening!r} followed "
                             f"by one with {closing!r}; put them back around the table (it is "
                             f"rewritten with every report).")
    start = text.find("\n", first) + 1
    return text, start, end


def _write_readme_table(bench: Benchmark, summary: dict) -> None:
    """Rewrite the table between bench.readme's markers with headline_table(summary)."""
    text, start, end = _readme_table_span(bench)
    table = "\n".join(headline_table(summary)).rstrip("\n") + "\n"
    if text[start:end] != table:
        path = Path(bench.readme)
        mode = path.stat().st_mode & 0o777
        util.atomic_write_text(path, text[:start] + table + text[end:])
        os.chmod(path, mode)
