"""Environment adapters: `envs.roboschool` registers pybullet's port of the Roboschool
humanoids with gymnasium (envwrap.py builds them).
"""
