"""Where the runtimes run: the local machine, a qemu guest booted here, or a host reached
through pytest-testinfra's backends, each behind one Target interface.
"""
