"""The node-local cache: ``$RANDOMMASK_CACHE`` or the system temporary folder, one subfolder per kind
of entry. Entries are written atomically (a temporary file renamed into place), so concurrent
processes on one node never read half an entry."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def cache_dir(kind: str) -> Path:
    """The folder of one kind of cache entry (not created)."""
    return Path(os.environ.get("RANDOMMASK_CACHE") or tempfile.gettempdir()) / f"randommask-{kind}"


def read_json(kind: str, key: str) -> Any | None:
    """A cached JSON value, or None when absent or unreadable (the caller recomputes it)."""
    try:
        return json.loads((cache_dir(kind) / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None


_WARNED: set[Path] = set()  # folders already reported unwritable in this process


def write_json(kind: str, key: str, value: Any) -> None:
    """Cache a JSON value; a cache that cannot be written is warned about and skipped (it only saves time)."""
    folder = cache_dir(kind)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(value, f)
        os.replace(tmp, folder / f"{key}.json")
    except OSError as e:  # only time is lost: say so once per folder and go on
        if folder in _WARNED:
            return
        _WARNED.add(folder)
        print(f"warning  node cache {folder} not writable ({e.strerror}); set RANDOMMASK_CACHE to a writable "
              "folder to keep such results between runs", file=sys.stderr)
