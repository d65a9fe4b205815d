"""A process's data dir: made if missing, checked writable, and held by one process at a time.

Two workers on one data dir would write one RocksDB store and overwrite each other's
snapshots; two learners would both write ``learner.safetensors``. The lock is the kernel's
(flock), so it dies with its process: no stale lock after a kill -9.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from streamrec.errors import ConfigError


def lock_data_dir(path: Path, owner: str = "worker") -> IO[str]:
    """Make ``path`` if needed and take it for this process (``<owner>.lock``, holding our pid).
    ConfigError, before anything runs, when ``path`` cannot be a writable folder or another
    ``owner`` holds it. Keep the returned handle open for as long as the process runs."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle = (path / f"{owner}.lock").open("a+", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"data dir {path} is not a writable folder ({exc.strerror or exc}); "
            "give the process a folder it can write with --data-dir"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise ConfigError(
            f"data dir {path} is in use by another {owner} (pid {holder}); give each {owner} "
            "its own --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
