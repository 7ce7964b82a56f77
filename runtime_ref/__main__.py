"""``python -m runtime_ref``: the same command line as ``runtime_ref/bin/runtime-ref``."""
from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
