#!/usr/bin/env bash
# The README's quick-start: train STEVE (TD3 backbone, the cpu_win benchmark's headline config) on
# InvertedPendulum-v5 on this machine (5-8 minutes on 2 CPU cores), then draw its learning curve,
# draw it against the committed benchmark runs of the same config (plot.py --reference cpu_win),
# and render a video of the trained agent.
# Each run replaces the previous quick-start run under output/quickstart/ (and nothing else).
# Override with QUICKSTART_CONFIG, QUICKSTART_FRAMES, QUICKSTART_OUTPUT.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CONFIG=${QUICKSTART_CONFIG:-config/experiments/quickstart/steve_td3_pendulum.json}
FRAMES=${QUICKSTART_FRAMES:-10000}
OUT=${QUICKSTART_OUTPUT:-output/quickstart}
start=$(date +%s)

echo "quick-start: training $CONFIG for $FRAMES frames (status every 5 s)"
"$PY" master.py "$CONFIG" 0 --total-frames "$FRAMES" --output-root "$OUT" --overwrite
run=$(dirname "$(dirname "$(ls "$OUT"/*/"$(basename "$CONFIG" .json)"/log/hps.json)")")

"$PY" plot.py "$run" --out "$run/learning_curve.png" --x frames
# Is this run normal? Its curve over the band of the benchmark's five held-out seeds (a config the
# benchmark does not have says so on stderr, and the quick-start goes on).
if "$PY" plot.py "$run" --reference cpu_win --out "$run/against_reference.png" >/dev/null; then
  reference="$run/against_reference.png"
else
  reference="(none: the benchmark cpu_win has no run of this config)"
fi
"$PY" visualizer.py "$run" --episodes 1 --video "$run/videos/trained.mp4"

"$PY" - "$run" "$start" "$reference" <<'PY'
import sys, time
from pathlib import Path
run, start, reference = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
rows = [line.split(",") for line in next(run.glob("log/*.greedy.csv")).read_text().split()]
first = [float(r[3]) for r in rows[:5]]
last = [float(r[3]) for r in rows[-5:]]
print(f"\nquick-start done in {(time.time() - start) / 60:.1f} min: greedy score "
      f"{sum(first) / len(first):.0f} at the first evaluations -> {sum(last) / len(last):.0f} at "
      f"the end (1000 is the maximum)")
print(f"  learning curve: {run / 'learning_curve.png'}")
print(f"  against the benchmark's seeds 0-4: {reference}")
print(f"  video:          {run / 'videos' / 'trained.mp4'}")
print(f"  run folder:     {run}")
PY
