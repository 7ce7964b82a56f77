"""Write a matrix document as the three files a run leaves: matrix.json, matrix.md, matrix.html."""
from __future__ import annotations

import json
from pathlib import Path

from .html import render_html
from .rows import Matrix
from .text import render_markdown


def write_all(doc: Matrix, out_dir: Path) -> list[Path]:
    """Write matrix.json, matrix.md and matrix.html; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "matrix.json", out_dir / "matrix.md", out_dir / "matrix.html"]
    paths[0].write_text(json.dumps(doc, indent=2) + "\n")
    paths[1].write_text(render_markdown(doc))
    paths[2].write_text(render_html(doc))
    return paths
