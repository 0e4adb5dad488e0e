"""Environment adapters: what the simulators need beyond envwrap.py's step contract.

- `envs.mujoco_oracle`: the MuJoCo simulator as a world model (`value_expansion.oracle`), stepping
  batches of stored simulator states with the task's own dynamics, reward and termination.
"""
