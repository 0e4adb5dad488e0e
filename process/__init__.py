"""The process layer: what one run's processes are and how they start, meet and stop.

- `process.roles`: the role table, `ProcessSpec` and the frame-ratio rule;
- `process.runtime`: how a child process starts and calls its role's entry function;
- `process.preflight`: master.py's checks before anything starts (`Plan`);
- `process.rundir`: the run folder, its lock and the shared progress counters;
- `process.checkpoint`: atomic checkpoints, strict restores, backups;
- `process.actors`: interactors, evaluators and `PolicyActor`, the one way to act;
- `process.devices`: GPU placement;
- `process.render`: the visualizer's TensorFlow-free render child.
"""
