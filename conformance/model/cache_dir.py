"""Where the suite keeps what it can make again: ``$XDG_CACHE_HOME/oci-conformance`` (or ~/.cache).

Built rootfs trees, unpacked image layers, kernels for guests and loaded scenarios
live there; removing the directory only costs the time to make them again.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "oci-conformance"
