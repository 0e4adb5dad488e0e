"""The runs of a sweep and what each one reserves: `plan_runs` and its checks.

Runs in the process that drives a sweep (sweep.py, bench/sample_efficiency.py), before Ray is
started or joined, and where a benchmark's report finds its run folders (reports/benchmark.py).
Reads the config files (config.load_config); touches no run folder and writes nothing.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import config as config_lib
from errors import UserError
from process.rundir import RunDir

MEMORY_PER_PROCESS = 800 * 2**20  # TensorFlow + an environment: about 0.7 GB per process


class SweepError(UserError):
    """A problem with the sweep's input or cluster; the message is one sentence with the fix."""


@dataclasses.dataclass(frozen=True)
class RunRequest:
    """One (config, seed) pair and what its task reserves."""

    config: str  # absolute path of the config file
    experiment: str
    seed: int
    run: RunDir
    model_based: bool
    processes: int
    cpus: float
    memory: int  # bytes
    gpus: int = 0  # set once the cluster is known

    @property
    def key(self) -> str:
        """`<ENV>/<RUN>`: how the run is named in tables and messages."""
        return f"{self.run.path.parent.name}/{self.run.name}"


@dataclasses.dataclass
class RunResult:
    """How one run of the sweep ended."""

    config: str
    experiment: str
    seed: int
    path: str  # the run folder
    state: str  # "done", "skipped" (finished before), "failed" or "stopped" (interrupted)
    attempts: int = 0  # master.py starts in this sweep
    nodes: list[str] = dataclasses.field(default_factory=list)  # node id of each attempt
    modes: list[str] = dataclasses.field(default_factory=list)  # new/resume/restart, per attempt
    frames: int = 0
    score: float | None = None  # latest greedy score
    updates_per_frame: float | None = None
    message: str = ""


# ------------------------------------------------------------------------------ planning


def plan_runs(configs: Sequence[str | os.PathLike], seeds: int | Sequence[int],
              output_root: str | os.PathLike | None = None, cpus_per_run: float | None = None,
              memory_per_run: float | None = None) -> list[RunRequest]:
    """Resolve every config and list the runs, without touching the disk or Ray.

    `seeds`: a count N (seeds 0..N-1) or the seeds themselves. `memory_per_run` is in GB.
    Raises SweepError (or config.ConfigError) naming the problem and the fix.
    """
    if not configs:
        raise SweepError("No config was given; name at least one config file.")
    if isinstance(seeds, int):
        if seeds < 1:
            raise SweepError(f"--seeds {seeds} gives no runs; use 1 or more.")
        seeds = list(range(seeds))
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise SweepError(f"The seeds {seeds} must be distinct and at least one; fix the list.")
    if cpus_per_run is not None and cpus_per_run <= 0:
        raise SweepError(f"--cpus-per-run {cpus_per_run} must be above 0.")
    if memory_per_run is not None and memory_per_run < 0:
        raise SweepError(f"--memory-per-run {memory_per_run} must be 0 or more GB.")
    requests: list[RunRequest] = []
    seen: dict[str, str] = {}
    for path in configs:
        path = Path(path)
        if not path.is_file():
            raise SweepError(f"Config file {path} does not exist; give the path of a .json "
                             f"file (for example config/experiments/goodruns/hopper/"
                             f"steve3.json).")
        cfg = config_lib.load_config(path)
        experiment = config_lib.experiment_name(path)
        root = Path(output_root if output_root is not None else cfg["output_root"]).resolve()
        model_based = config_lib.is_model_based(cfg)
        processes = ((2 if model_based else 1) + cfg["agent_config"]["count"]
                     + cfg["evaluator_config"]["count"])
        memory = (int(memory_per_run * 2**30) if memory_per_run is not None
                  else processes * MEMORY_PER_PROCESS)
        for seed in seeds:
            run = RunDir.for_config(cfg, experiment, seed, str(root))
            if run.root in seen:
                raise SweepError(f"{path} and {seen[run.root]} would both write {run.root}; "
                                 f"rename one of the config files.")
            seen[run.root] = str(path)
            requests.append(RunRequest(
                config=str(path.resolve()), experiment=experiment, seed=seed, run=run,
                model_based=model_based, processes=processes,
                cpus=float(cpus_per_run if cpus_per_run is not None else processes),
                memory=memory))
    return requests



def gpus_per_run(model_based: bool, cluster_gpus: float) -> int:
    """2 for model-based, 1 for model-free configs; 0 when the cluster has no GPU."""
    if cluster_gpus <= 0:
        return 0
    return 2 if model_based else 1


def check_fits(requests: Sequence[RunRequest], nodes: Sequence[dict]) -> None:
    """Refuse (SweepError) a run that no single node can hold: it would wait forever."""
    if not nodes:
        raise SweepError("The Ray cluster has no live node; start one with `ray start --head`.")
    for req in requests:
        need = {"GPU": req.gpus, "CPU": req.cpus, "memory": req.memory}
        if any(all(node.get(k, 0) >= v for k, v in need.items() if v) for node in nodes):
            continue
        most = {k: max(node.get(k, 0) for node in nodes) for k in need}
        if req.gpus > most["GPU"]:
            raise SweepError(
                f"{req.key} needs {req.gpus} GPUs but the largest node has {most['GPU']:g}; "
                f"add a node with {req.gpus} GPUs or run model-free configs only.")
        if req.cpus > most["CPU"]:
            raise SweepError(
                f"{req.key} reserves {req.cpus:g} CPUs but the largest node has "
                f"{most['CPU']:g}; lower --cpus-per-run to {most['CPU']:g} or less.")
        if req.memory > most["memory"]:
            raise SweepError(
                f"{req.key} reserves {req.memory / 2**30:.1f} GB of memory but the largest "
                f"node offers {most['memory'] / 2**30:.1f} GB to Ray; lower --memory-per-run.")
        raise SweepError(f"{req.key} needs {req.gpus} GPUs, {req.cpus:g} CPUs and "
                         f"{req.memory / 2**30:.1f} GB on one node and no node has all three; "
                         f"lower --cpus-per-run or --memory-per-run.")
