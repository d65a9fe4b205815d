"""A worker's local snapshot files (item statistics, learned serving figures): JSON written
atomically, so a crash mid-write never leaves a torn file for the next start to read."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, body: Mapping[str, Any]) -> None:
    """Write ``body`` as JSON to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body), encoding="utf-8")
    os.replace(tmp, path)
