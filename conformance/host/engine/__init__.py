"""The engine lane's machinery: a private containerd, its API, and images imported into it.

``wire.py`` speaks gRPC and protobuf with the standard library; ``api.py``
names the few containerd calls the harness makes; ``daemon.py`` starts,
stops and sweeps the private daemon; ``oci_layout.py`` writes a scenario's
image as an OCI image layout for containerd's importer.  The driver that
uses them is ``drivers/containerd.py``.
"""
