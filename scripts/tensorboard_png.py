"""Draw a run's TensorBoard scalars into one PNG, read from its event files.

    .venv/bin/python scripts/tensorboard_png.py RUN_DIR [--out PATH.png] [--smoothing 0.6]

Run by hand (the screenshot in docs/output.md was made with it). Reads every process's summaries
under `RUN_DIR/tensorboard/<process>/` with the tensorboard package's event reader, and draws the
tags a researcher looks at first, one panel each, against environment frames as TensorBoard does
(the raw points faint, an exponential moving average with TensorBoard's `--smoothing` weight
on top; the per-horizon STEVE tags share one panel, a line per j). Writes only the PNG (to a
temporary name, then renamed into place), by default `RUN_DIR/tensorboard.png`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python scripts/tensorboard_png.py`: the project's modules
    sys.path.insert(0, str(ROOT))
# (panel title, tag prefix or tag, processes to look in); a prefix ending in "/j" gathers j0..jH
PANELS = (
    ("charts/episodic_return (training)", "charts/episodic_return", "interactor"),
    ("eval/episodic_return", "eval/episodic_return", "evaluator"),
    ("losses/q", "losses/q", "policy"),
    ("charts/mean_q, charts/mean_target", ("charts/mean_q", "charts/mean_target"), "policy"),
    ("steve/horizon_weight/j", "steve/horizon_weight/j", "policy"),
    ("steve/ensemble_std/j", "steve/ensemble_std/j", "policy"),
    ("wm/total (world-model loss)", "wm/total", "worldmodel"),
    ("charts/updates_per_s", "charts/updates_per_s", "policy"),
)


class TensorBoardError(Exception):
    """A problem the user can fix; the message is one sentence."""


def read_scalars(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tag: (steps [n], values [n])} of every scalar summary in one TensorBoard run folder."""
    from process import runtime
    runtime.import_tensorflow()  # the event reader loads TensorFlow: without its start-up lines
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={
        event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        events = acc.Tensors(tag)
        values = [tensor_util.make_ndarray(e.tensor_proto) for e in events]
        if all(v.ndim == 0 and v.dtype.kind == "f" for v in values):
            out[tag] = (np.array([e.step for e in events], np.float64),
                        np.array(values, np.float64))
    return out


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start."""
    out = np.empty_like(values)
    last, norm = 0.0, 0.0
    for i, v in enumerate(values):
        last = last * weight + (1 - weight) * v
        norm = norm * weight + (1 - weight)
        out[i] = last / norm
    return out


def draw(run: Path, out: Path, weight: float) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    board = run / "tensorboard"
    if not board.is_dir():
        raise TensorBoardError(f"{run} has no tensorboard/ folder; give a run folder made by "
                               f"master.py.")
    scalars = {p.name: read_scalars(p) for p in sorted(board.iterdir()) if p.is_dir()}
    figure = Figure(figsize=(13.0, 5.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 4).flat
    for ax, (title, tags, process) in zip(axes, PANELS, strict=True):
        series = []
        for name, tags_of in scalars.items():
            if not name.startswith(process):
                continue
            wanted = tags if isinstance(tags, tuple) else (tags,)
            for tag in sorted(tags_of, key=_tag_order):
                if tag in wanted or (wanted[0].endswith("/j") and tag.startswith(wanted[0])):
                    series.append((tag, *tags_of[tag]))
        for i, (tag, steps, values) in enumerate(series):
            color = f"C{i % 10}"
            if len(series) == 1:
                ax.plot(steps, values, color=color, alpha=0.25, linewidth=1)
            label = tag.rsplit("/", 1)[-1] if len(series) > 1 else None
            ax.plot(steps, smooth(values, weight), color=color, linewidth=1.6, label=label)
        if len(series) > 1:
            ax.legend(fontsize="x-small", ncol=2, loc="best")
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("frames", fontsize="small")
        ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.tick_params(labelsize="small")
        ax.grid(True, alpha=0.3)
        if not series:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    figure.suptitle(f"TensorBoard scalars of {run.name} (smoothing {weight:g})")
    import util

    return util.save_png(figure, out, dpi=72)


def _tag_order(tag: str) -> tuple[str, int]:
    """Sort j0, j1, ..., j10 by number."""
    head, _, tail = tag.rpartition("/j")
    return (head, int(tail)) if tail.isdigit() else (tag, -1)


def _thousands(value: float, _position=None) -> str:
    return f"{value / 1000:g}k" if abs(value) >= 1000 else f"{value:g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tensorboard_png.py", description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a run folder made by master.py")
    parser.add_argument("--out", default=None, help="PNG path (default RUN/tensorboard.png)")
    parser.add_argument("--smoothing", type=float, default=0.6,
                        help="TensorBoard's smoothing weight, 0 to 0.99 (default 0.6)")
    args = parser.parse_args(argv)
    if not 0 <= args.smoothing < 1:
        parser.error("--smoothing must be at least 0 and below 1")
    run = Path(args.run)
    out = Path(args.out) if args.out else run / "tensorboard.png"
    try:
        if not run.is_dir():
            raise TensorBoardError(f"{run} is not a folder; give a run folder made by master.py.")
        print(draw(run, out, args.smoothing))
    except TensorBoardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
