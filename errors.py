"""The one base class of every error a user can cause and fix.

Imported by every module that refuses bad input (config.py, envwrap.py, replay.py,
process/checkpoint.py, process/rundir.py, master.py, sweep.py, visualizer.py, toy_demo.py), in
whichever process runs them; reads and writes nothing. An entry point (`master.main`, `sweep.main`,
`visualizer.main`) catches `UserError` and prints its message, one sentence naming the thing and
the fix, as `error: ...` with exit status 2; any other exception is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """A problem the user can fix (command line, config, run folder, environment, cluster); the
    message is one sentence naming it and the fix."""
