"""Benchmark of replay.py: append rate (frames/s, appends of 8 frames at Hopper sizes 11/3) and
sample rate (batches of 512 per second from a 100k-frame buffer, Hopper and Humanoid sizes).

Run by hand: `.venv/bin/python bench/replay_speed.py [--dir DIR] [--seconds S]`. It writes
temporary buffers under DIR (default: the system's temporary folder; pass a folder on the disk
that will hold the runs to measure that disk) and deletes them. The last line is
`replay_append_fps=<n> replay_sample_batches_per_s=<n>`, both at Hopper sizes, appends with the
default `sync=True`.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from replay import ReplayBuffer  # noqa: E402

HOPPER, HUMANOID = (11, 3), (348, 17)


def frames(n, obs_dims, action_dims, rng):
    obs = rng.standard_normal((n, obs_dims), dtype=np.float32)
    return (obs, obs + 1, rng.standard_normal((n, action_dims), dtype=np.float32),
            rng.standard_normal(n, dtype=np.float32), np.zeros(n, np.float32))


def rate(step, seconds):
    """Calls of `step` per second, the best of three timed thirds of `seconds`."""
    best = 0.0
    for _ in range(3):
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds / 3:
            step()
            n += 1
        best = max(best, n / (time.perf_counter() - t0))
    return best


def append_fps(folder, sync, seconds):
    rng = np.random.default_rng(0)
    buf = ReplayBuffer.create(folder / f"append_{sync}", *HOPPER, 1_000_000, sync=sync)
    batch = frames(8, *HOPPER, rng)
    fps = 8 * rate(lambda: buf.append(*batch), seconds)
    buf.close()
    return fps


def sample_batches_per_s(folder, dims, seconds):
    rng = np.random.default_rng(1)
    buf = ReplayBuffer.create(folder / f"sample_{dims[0]}", *dims, 100_000, sync=False)
    chunk = frames(1000, *dims, rng)
    while buf.count < 100_000:
        buf.append(*chunk)
    per_s = rate(lambda: buf.sample(512, 100_000, rng), seconds)
    buf.close()
    return per_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="folder for the temporary buffers")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        fps_sync = append_fps(folder, True, args.seconds)
        print(f"append, Hopper 11/3, batches of 8, sync=True (default): {fps_sync:,.0f} frames/s")
        fps_nosync = append_fps(folder, False, args.seconds)
        print(f"append, Hopper 11/3, batches of 8, sync=False: {fps_nosync:,.0f} frames/s")
        sample_hopper = sample_batches_per_s(folder, HOPPER, args.seconds)
        print(f"sample, Hopper 11/3, batch 512 from 100k frames: {sample_hopper:,.0f} batches/s")
        sample_humanoid = sample_batches_per_s(folder, HUMANOID, args.seconds)
        print(f"sample, Humanoid 348/17, batch 512 from 100k frames: "
              f"{sample_humanoid:,.0f} batches/s")
    print(f"replay_append_fps={fps_sync:.0f} replay_sample_batches_per_s={sample_hopper:.0f}")


if __name__ == "__main__":
    main()
