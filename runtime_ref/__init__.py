"""runtime-ref: a small OCI runtime in Python, runc's command line, built on Linux primitives.

One module per phase, read in this order: spec (config.json) → namespaces →
rootfs → cgroups → security, seccomp → init (the steps between clone and
exec, in order) → container (the lifecycle verbs) → cli.
"""
