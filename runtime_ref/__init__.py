"""runtime-ref: a small OCI runtime in Python, runc's command line, built on Linux primitives.

One module per phase, read in this order: spec (config.json) → namespaces →
rootfs → cgroups → security, seccomp → process (the last steps before exec,
shared by the init and ``exec``) → init (every step between clone and exec,
in order) → spawn (the runtime's side of that) → container (the lifecycle
verbs), exec, freeze (pause/resume), ps, update → cli.
"""
from __future__ import annotations
