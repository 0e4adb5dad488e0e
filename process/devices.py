"""Which GPU each process may see: the helpers behind master.py's and visualizer.py's GPU argument.

Run in the master (before it starts its children) and in the visualizer (before it imports
TensorFlow); reads the CUDA_VISIBLE_DEVICES variable or asks `nvidia-smi -L`, and writes nothing
to disk. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
import subprocess

from errors import UserError


def visible_gpus() -> list[str]:
    """The GPUs this process may use: the CUDA_VISIBLE_DEVICES list if set, else nvidia-smi's."""
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    if preset is not None:
        return [d.strip() for d in preset.split(",") if d.strip() and d.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (FileNotFoundError, subprocess.TimeoutExpired, OSError):
        return []
    if out.returncode != 0:
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def assign_devices(gpu: int, model_based: bool, gpus: list[str]) -> tuple[str, str, str]:
    """CUDA_VISIBLE_DEVICES values for (policy learner, world-model learner, note)."""
    if gpu < 0:
        raise UserError(f"GPU {gpu} is not a GPU id; give 0 or more (0 also runs on a machine "
                        f"without a GPU).")
    if not gpus:
        if gpu != 0:
            raise UserError(f"GPU {gpu} was asked for, but this machine shows no GPU; use 0 to "
                            f"run everything on the CPU.")
        return "", "", "no GPU visible: every process runs on the CPU"
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    listing = (f"CUDA_VISIBLE_DEVICES={preset} gives {len(gpus)}" if preset is not None
               else f"this machine has {len(gpus)}")
    if gpu >= len(gpus):
        raise UserError(f"GPU {gpu} does not exist: {listing} GPU(s), numbered 0 to "
                        f"{len(gpus) - 1}; pick one of those.")
    policy = gpus[gpu]
    if not model_based:
        return policy, "", f"policy learner on GPU {policy}"
    if gpu + 1 < len(gpus):
        return policy, gpus[gpu + 1], f"policy learner on GPU {policy}, world model on GPU " \
                                      f"{gpus[gpu + 1]}"
    return policy, policy, (f"policy learner on GPU {policy}; there is no GPU {gpu + 1}, so the "
                            f"world model shares GPU {policy}")



def set_visible_gpu(gpu: int) -> str:
    """Show TensorFlow only GPU `gpu` (or none on a machine without one); returns a note.

    Must run before TensorFlow is imported in this process (the visualizer's).
    """
    device, _, note = assign_devices(gpu, False, visible_gpus())  # or UserError
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    return note
