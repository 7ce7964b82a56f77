"""The engine lane's machinery: a private containerd, its API, and images imported into it.

``wire.py`` speaks gRPC and protobuf with the standard library; ``api.py``
names the few containerd calls the harness makes; ``daemon.py`` starts,
stops and sweeps the private daemon; ``images.py`` writes a scenario's
image as an OCI image layout, has containerd import and unpack it, and
prepares a snapshot per container; ``stdio.py`` copies a task's stdio
through the FIFOs the shim opens; ``exec_process.py`` is ``exec`` as a
command (``Tasks.Exec`` with runc's exec flags applied to the container's
process).  The driver that uses them is ``drivers/containerd.py``.
"""
