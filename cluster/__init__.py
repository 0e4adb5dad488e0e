"""The cluster layer of sweep.py: `cluster.plan` (the run list and its resources) and
`cluster.guard` (the process beside each run's master.py on a Ray worker).
"""
