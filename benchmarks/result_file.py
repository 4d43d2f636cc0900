"""Where a benchmark's results go: one JSON file, indented and ending in a newline, so
that two result files compare line by line and benchmarks/RESULTS.md can cite them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def write(result: dict[str, Any], path: str | Path | None, *, echo: bool = False) -> None:
    """Write ``result`` to ``path`` (nothing when the run was not asked for a file) and
    say where on stderr; with ``echo``, print the JSON on stdout too."""
    text = json.dumps(result, indent=2)
    if echo:
        print(text)
    if path is not None:
        Path(path).write_text(text + "\n")
        print(f"wrote {path}", file=sys.stderr)
