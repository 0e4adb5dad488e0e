"""Learning curves from finished or running STEVE runs: score against frames and against hours.

Run by hand after (or during) training, never by the training processes:

    python plot.py output/ --pattern '*Hopper*'            # every run under a root
    python plot.py output/Hopper-v5/steve.seed0 output/Hopper-v5/ddpg.seed0 --x frames

Reads, for every run folder `<output_root>/<ENV>/<EXPERIMENT>/`:
- `log/*.greedy.csv`: one line per finished evaluation episode, `hours,epoch,frames,score`
  (no header, appended by the evaluators; a half-written last line is ignored);
- `log/hps.json` (optional): the resolved config; `env.name` names the environment panel.

Writes PNG files only (to a temporary name, then renamed into place): with `--x frames` or
`--x hours` one file at `--out`; with `--x both` (the default) two files, `<out>_frames.png` and
`<out>_hours.png`. Default `--out`: `learning_curves.png` in the first root given, or in the
parent of the first run given. The written paths are printed, one per line.

Each figure has one panel per environment and one line per algorithm (runs grouped by experiment
name without the `.seed<S>` suffix and without a trailing run number, e.g. `steve3.seed1` ->
`steve`). Per run, the score at each evaluated frame count is the mean of its evaluation
episodes over a trailing window of frames (`--smooth FRAMES`; by default 1/20 of the longest
run, rounded; 0: the episodes at that frame count only), as papers draw learning curves; each
run is then interpolated onto a common grid (only inside the range it covers), and the line is
the mean over runs with a shaded band when there are several (min-max across runs by default,
or +-1 standard deviation). The title says the window and what line and band are. The time axis
is in minutes when every run is shorter than an hour. A greedy.csv may hold header lines.

    python plot.py RUN_DIR [RUN_DIR ...] --reference cpu_win --out compare.png

draws, against frames, a committed benchmark's band for each run's environment and algorithm
beneath the runs (reports/reference.py): the preset's mean over its seeds (dashed) and its min-max
across seeds (grey), at the report's frame counts, each seed's score there being the report's
windowed score (the mean of its episodes in the last 10% of frames before the count). The
runs' own curves are drawn as above, with dots at the same frame counts scored the same way.
The algorithm is the preset's one whose config resolves to the run's (log/hps.json), else the
one with the run's label, else `--algorithm`. An unknown preset, or an environment or algorithm
the preset lacks, is one sentence on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from errors import UserError
from reports import reference
from reports.runs import (  # a run's evaluations and labels, read as the reports read them
    FRAMES,
    HOURS,
    SCORE,
    RunReadError,
    load_greedy,
    run_info,
)
from util import save_png

X_CHOICES = ("frames", "hours", "both")
LABEL_BY_CHOICES = ("algo", "experiment")
BAND_CHOICES = ("minmax", "std")
SEARCH_DEPTH = 3  # how deep below a root to look for run folders (root/ENV/EXPERIMENT is 2)
GRID_POINTS = 300  # common-grid size when the runs' own x values are too many to use directly
PANEL_COLUMNS = 4  # panels per figure row

# A problem the user can fix: a missing path, no runs found, a run without evaluations. The
# class that reports/runs.py raises for a run it cannot read, so one `except PlotError` catches
# both.
PlotError = RunReadError


# ----------------------------------------------------------------------------- finding runs


def is_run(path: Path) -> bool:
    """A run folder is a folder holding a `log/` folder."""
    return (path / "log").is_dir()


def find_runs(paths: Iterable[str | os.PathLike], pattern: str | None = None) -> list[Path]:
    """Return the run folders named by `paths`, in a stable order, without duplicates.

    A path that is itself a run is taken as is. Any other folder is a root, searched up to
    `SEARCH_DEPTH` levels down for run folders whose path relative to the root matches the
    fnmatch `pattern` (all of them when `pattern` is None). Raises PlotError for a path that
    does not exist, or when nothing is found.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise PlotError("no run folder or output root was given: name at least one.")
    runs: list[Path] = []
    for path in paths:
        if not path.exists():
            raise PlotError(f"{path} does not exist: check the run folder or output root given.")
        if not path.is_dir():
            raise PlotError(f"{path} is not a folder: give a run folder or an output root.")
        if is_run(path):
            runs.append(path)
            continue
        for run in sorted(_search(path, SEARCH_DEPTH)):
            relative = run.relative_to(path).as_posix()
            if pattern is None or fnmatch.fnmatch(relative, pattern):
                runs.append(run)
    unique = list(dict.fromkeys(runs))
    if not unique:
        where = ", ".join(str(p) for p in paths)
        matching = f" matching --pattern '{pattern}'" if pattern is not None else ""
        raise PlotError(
            f"no run folder (a folder with log/){matching} was found under {where}: "
            "check the paths and the pattern."
        )
    return unique


def _search(root: Path, depth: int) -> list[Path]:
    """Run folders below `root` (not `root` itself), at most `depth` levels down."""
    if depth <= 0:
        return []
    found: list[Path] = []
    try:
        children = sorted(entry for entry in root.iterdir() if entry.is_dir())
    except OSError:
        return []
    for child in children:
        if child.name.startswith("."):
            continue
        if is_run(child):
            found.append(child)  # do not look inside a run (log/, checkpoints/)
        else:
            found.extend(_search(child, depth - 1))
    return found


# ----------------------------------------------------------------------------- grouping


def group_runs(
    run_dirs: Iterable[str | os.PathLike], label_by: str = "algo"
) -> dict[str, dict[str, list[Path]]]:
    """Group runs as {environment: {label: [run folders]}}, keys sorted.

    `label_by="algo"` labels a run by `algorithm_label` of its folder name; `"experiment"` by
    the folder name without its `.seed<S>` suffix (so seeds still share a line).
    """
    if label_by not in LABEL_BY_CHOICES:
        raise PlotError(f"label_by must be one of {', '.join(LABEL_BY_CHOICES)}, not {label_by!r}.")
    groups: dict[str, dict[str, list[Path]]] = {}
    for run_dir in run_dirs:
        info = run_info(run_dir)
        label = info.algo if label_by == "algo" else info.experiment
        groups.setdefault(info.env, {}).setdefault(label, []).append(info.path)
    return {env: dict(sorted(labels.items())) for env, labels in sorted(groups.items())}


# ----------------------------------------------------------------------------- curves


def run_curve(data: np.ndarray, x: str, window: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One run's curve (x [n], score [n]), one point per evaluated frame count (one policy
    checkpoint), sorted by x; its hours are the mean hours of the episodes there. `x` is
    "frames" or "hours".

    The score at frame count f is the mean score of the run's evaluation episodes with frames
    in (f - window, f]: a trailing window of `window` frames (0: the episodes at f only).
    """
    if x not in ("frames", "hours"):
        raise PlotError(f"x must be 'frames' or 'hours', not {x!r}.")
    frames, inverse = np.unique(data[:, FRAMES], return_inverse=True)  # [n], [k]
    counts = np.bincount(inverse, minlength=len(frames))  # [n]
    if window > 0:
        order = np.argsort(data[:, FRAMES], kind="stable")
        sorted_frames = data[order, FRAMES]  # [k]
        cumulative = np.concatenate([[0.0], np.cumsum(data[order, SCORE])])  # [k + 1]
        end = np.searchsorted(sorted_frames, frames, side="right")  # [n]
        start = np.searchsorted(sorted_frames, frames - window, side="right")  # [n]
        score = (cumulative[end] - cumulative[start]) / (end - start)  # [n]
    else:
        score = np.bincount(inverse, weights=data[:, SCORE], minlength=len(frames)) / counts
    if x == "frames":
        return frames, score
    hours = np.bincount(inverse, weights=data[:, HOURS], minlength=len(frames)) / counts  # [n]
    order = np.argsort(hours, kind="stable")
    return hours[order], score[order]


def default_window(data: Iterable[np.ndarray]) -> float:
    """The smoothing window drawn by default: 1/20 of the longest run's frames, rounded down to
    1, 2 or 5 times a power of ten (500 frames for a 16k-frame run, 50k for 1M); 0 for runs
    that end at frame 0."""
    longest = max(float(d[:, FRAMES].max()) for d in data)
    target = longest / 20.0
    if target < 1:
        return 0.0
    power = 10.0 ** np.floor(np.log10(target))
    return float(max(m * power for m in (1, 2, 5) if m * power <= target))


@dataclass(frozen=True)
class Band:
    """A group's summary on a common grid; NaN where no run covers a grid point."""

    x: np.ndarray  # [g]
    mean: np.ndarray  # [g]
    low: np.ndarray  # [g]
    high: np.ndarray  # [g]
    count: np.ndarray  # [g] runs covering each grid point


def summarize(curves: Sequence[tuple[np.ndarray, np.ndarray]], band: str = "minmax") -> Band:
    """Mean and band across runs of a group.

    The grid is the union of the runs' own x values when that is small, else GRID_POINTS evenly
    spaced points over the union of their ranges (plus each run's end points). Each run is
    linearly interpolated onto the grid only inside [its first x, its last x].
    """
    if band not in BAND_CHOICES:
        raise PlotError(f"band must be one of {', '.join(BAND_CHOICES)}, not {band!r}.")
    all_x = np.unique(np.concatenate([xs for xs, _ in curves]))
    if len(all_x) <= GRID_POINTS:
        grid = all_x
    else:
        ends = np.array([v for xs, _ in curves for v in (xs[0], xs[-1])])
        grid = np.unique(np.concatenate([np.linspace(all_x[0], all_x[-1], GRID_POINTS), ends]))
    values = np.full((len(curves), len(grid)), np.nan)  # [runs, g]
    for i, (xs, ys) in enumerate(curves):
        inside = (grid >= xs[0]) & (grid <= xs[-1])
        values[i, inside] = np.interp(grid[inside], xs, ys)
    count = np.sum(~np.isnan(values), axis=0)  # [g]
    covered = count > 0
    grid, values, count = grid[covered], values[:, covered], count[covered]
    mean = np.nanmean(values, axis=0)  # [g]
    if band == "minmax":
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    else:
        std = np.nanstd(values, axis=0)
        low, high = mean - std, mean + std
    return Band(x=grid, mean=mean, low=low, high=high, count=count)


# ----------------------------------------------------------------------------- drawing


def output_paths(out_path: str | os.PathLike, x: str) -> dict[str, Path]:
    """{x kind: PNG path}: `out_path` itself for one kind; `<stem>_frames.png` and
    `<stem>_hours.png` next to it for "both"."""
    if x not in X_CHOICES:
        raise PlotError(f"x must be one of {', '.join(X_CHOICES)}, not {x!r}.")
    out = Path(out_path)
    if out.suffix.lower() != ".png":
        raise PlotError(f"the output {out} must end in .png: give a .png path with --out.")
    if x != "both":
        return {x: out}
    return {kind: out.with_name(f"{out.stem}_{kind}.png") for kind in ("frames", "hours")}


def default_out_path(paths: Sequence[str | os.PathLike]) -> Path:
    """`learning_curves.png` in the first path when it is a root, or in a run's parent folder."""
    first = Path(paths[0])
    folder = Path(os.path.abspath(first)).parent if is_run(first) else first  # `.` has no parent
    return folder / "learning_curves.png"


def plot_runs(
    run_dirs: Iterable[str | os.PathLike],
    out_path: str | os.PathLike,
    x: str = "both",
    label_by: str = "algo",
    band: str = "minmax",
    smooth: float | None = None,
) -> list[str]:
    """Draw the learning curves of `run_dirs` and return the PNG paths written.

    `x`: "frames", "hours" or "both" (two PNGs, see `output_paths`). `smooth`: each run's score
    is averaged over a trailing window of this many frames before the mean over runs (see
    `run_curve`); None picks `default_window`, 0 draws the evaluations as they are. Raises
    PlotError before writing anything if a run has no evaluations yet.
    """
    if smooth is not None and not smooth >= 0:
        raise PlotError(f"the smoothing window must be 0 or more frames, not {smooth}.")
    outputs = output_paths(out_path, x)
    if band not in BAND_CHOICES:
        raise PlotError(f"band must be one of {', '.join(BAND_CHOICES)}, not {band!r}.")
    run_dirs = list(dict.fromkeys(Path(r) for r in run_dirs))
    if not run_dirs:
        raise PlotError("no run folders were given to plot: name at least one.")
    groups = group_runs(run_dirs, label_by)
    data = {run: load_greedy(run) for run in run_dirs}  # every run is checked before drawing
    window = default_window(data.values()) if smooth is None else float(smooth)
    written = []
    for kind, path in outputs.items():
        figure = _draw(groups, data, kind, band, window)
        written.append(str(save_png(figure, path)))
    return written


def _draw(groups, data, kind: str, band: str, window: float = 0.0):
    """A matplotlib Figure (Agg canvas) with one panel per environment. The time axis is in
    minutes when every run is shorter than an hour."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    labels = sorted({label for by_label in groups.values() for label in by_label})
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    n_panels = len(groups)
    n_cols = min(PANEL_COLUMNS, n_panels)
    n_rows = -(-n_panels // n_cols)
    figure = Figure(figsize=(4.2 * n_cols, 3.4 * n_rows + 0.5), layout="constrained")
    FigureCanvasAgg(figure)  # render with Agg, whatever pyplot's backend is
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    minutes = kind == "hours" and max(float(d[:, HOURS].max()) for d in data.values()) < 1.0
    scale = 60.0 if minutes else 1.0
    for ax, (env, by_label) in zip(axes.flat, groups.items(), strict=False):
        for label, runs in by_label.items():
            curves = [run_curve(data[run], kind, window) for run in runs]
            summary = summarize([(xs * scale, ys) for xs, ys in curves], band)
            few = len(summary.x) < 3
            ax.plot(
                summary.x,
                summary.mean,
                color=colors[label],
                linewidth=1.8,
                marker="o" if few else None,
                label=f"{label} ({len(runs)} run{'s' if len(runs) != 1 else ''})",
            )
            if len(runs) > 1:
                ax.fill_between(summary.x, summary.low, summary.high, color=colors[label],
                                alpha=0.2, linewidth=0)
        ax.set_title(env)
        ax.set_xlabel("environment frames" if kind == "frames" else
                      "minutes" if minutes else "hours")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.set_ylabel("score (greedy episode return)")
        if kind == "frames":
            ax.xaxis.set_major_formatter(FuncFormatter(_frames_tick))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="best")
    for ax in list(axes.flat)[n_panels:]:
        ax.set_visible(False)
    figure.suptitle(caption(groups, band, window, one_column=n_cols == 1))
    return figure


def plot_with_reference(run_dirs: Sequence[str | os.PathLike], preset: str,
                        out_path: str | os.PathLike, algorithm: str | None = None,
                        band: str = "minmax", smooth: float | None = None) -> str:
    """Draw the runs against frames above the reference band of `preset` (see the module
    docstring) into the PNG `out_path`; return its path. Raises PlotError or
    reference.UnknownReference before writing anything."""
    summary = reference.load_summary(preset)
    out = output_paths(out_path, "frames")["frames"]
    run_dirs = list(dict.fromkeys(Path(r) for r in run_dirs))
    if not run_dirs:
        raise PlotError("no run folders were given to plot: name at least one.")
    groups = group_runs(run_dirs)
    chosen = reference.algorithms_for(summary, groups, algorithm)
    bands = {env: reference.band(summary, env, algo) for env, algo in chosen.items()}
    data = {run: load_greedy(run) for run in run_dirs}
    window = default_window(data.values()) if smooth is None else float(smooth)
    figure = _draw(groups, data, "frames", band, window)
    labels = sorted({label for by_label in groups.values() for label in by_label})
    for ax, (env, by_label) in zip(figure.axes, groups.items(), strict=False):
        ref = bands[env]
        ax.fill_between(ref["frames"], ref["low"], ref["high"], color="0.6", alpha=0.35,
                        linewidth=0, zorder=0,
                        label=f"{preset} {chosen[env]}: min-max of {int(ref['seeds'].max())} "
                              f"seeds")
        ax.plot(ref["frames"], ref["mean"], color="0.25", linestyle="--", linewidth=1.4,
                zorder=1, label=f"{preset} {chosen[env]}: mean")
        for label, runs in by_label.items():
            color = f"C{labels.index(label) % 10}"  # _draw's colour of the label
            for run in runs:
                points = [(m, reference.score_at(data[run], m)) for m in ref["frames"]
                          if m <= data[run][:, FRAMES].max()]
                points = [(m, v) for m, v in points if v is not None]
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(xs, ys, linestyle="none", marker="o", markersize=4,
                            color=color, zorder=3)
        ax.legend(fontsize="small", loc="best")
    figure.suptitle(caption(groups, band, window, one_column=len(groups) == 1)
                    + f"\ndots: scored as in the {preset} report")
    return str(save_png(figure, out))


def caption(groups, band: str, window: float, one_column: bool = False) -> str:
    """The figure's title: how each run was smoothed and what the line and the band are."""
    if window > 0:
        smoothing = f"each run: mean score over the last {_frames_tick(window)} frames"
    else:
        smoothing = "each run: evaluation scores as they are (no smoothing)"
    sizes = [len(runs) for by_label in groups.values() for runs in by_label.values()]
    spread = "min-max" if band == "minmax" else "+-1 std"
    if max(sizes) == 1:
        parts = [smoothing, "one run per line"]
    elif min(sizes) > 1:
        parts = [smoothing, "line: mean over runs", f"shaded: {spread} across runs"]
    else:
        parts = [smoothing, "line: mean over runs",
                 f"shaded: {spread} across runs (lines of several runs)"]
    if one_column:  # one panel is too narrow for more than one part per line
        return "\n".join(parts)
    return f"{parts[0]}\n{'; '.join(parts[1:])}"


def _frames_tick(value: float, _position=None) -> str:
    """Frame counts as 0, 500, 20k, 1.5M."""
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:g}M"
    if magnitude >= 1e3:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plot.py",
        description="Plot score against environment frames and hours from runs' greedy.csv.",
    )
    parser.add_argument(
        "paths", nargs="+", metavar="RUN_OR_ROOT", help="a run folder (has log/) or an output root"
    )
    parser.add_argument(
        "--pattern", help="fnmatch pattern on run paths relative to a root, e.g. '*Hopper*/steve*'"
    )
    parser.add_argument("--out", help="PNG path (default: learning_curves.png in the first path)")
    parser.add_argument("--x", choices=X_CHOICES, default="both", help="x axis (default: both)")
    parser.add_argument(
        "--label-by", choices=LABEL_BY_CHOICES, default="algo", help="line per algo or experiment"
    )
    parser.add_argument(
        "--band", choices=BAND_CHOICES, default="minmax", help="shaded band across runs"
    )
    parser.add_argument(
        "--reference", metavar="PRESET",
        help="draw a committed benchmark's band beneath the runs, against frames (the presets "
        "with a summary in docs/benchmark/, e.g. cpu_win)",
    )
    parser.add_argument(
        "--algorithm", metavar="LABEL",
        help="with --reference: the reference algorithm to draw (default: the one whose config "
        "matches the run's, else the run's own label)",
    )
    parser.add_argument(
        "--smooth", type=float, default=None, metavar="FRAMES",
        help="average each run's score over a trailing window of FRAMES frames before the mean "
        "over runs (default: 1/20 of the longest run, rounded; 0: no smoothing)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        runs = find_runs(args.paths, args.pattern)
        out = Path(args.out) if args.out else default_out_path(args.paths)
        if args.reference is not None:
            if args.x not in ("frames", "both"):
                raise PlotError(f"--reference draws against frames only; drop --x {args.x}.")
            written = [plot_with_reference(runs, args.reference, out, args.algorithm,
                                           args.band, args.smooth)]
        elif args.algorithm is not None:
            raise PlotError("--algorithm only applies with --reference; add --reference PRESET.")
        else:
            written = plot_runs(runs, out, x=args.x, label_by=args.label_by, band=args.band,
                                smooth=args.smooth)
    except UserError as error:  # PlotError, reference.UnknownReference
        print(f"plot.py: error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
