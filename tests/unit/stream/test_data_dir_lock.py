"""One worker per data dir: a second one is refused with the holder's pid; the lock dies with
its holder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamrec.errors import ConfigError
from streamrec.stream.data_dir import lock_data_dir


def test_a_second_worker_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    held = lock_data_dir(tmp_path)
    try:
        with pytest.raises(ConfigError, match=f"in use by another worker \\(pid {os.getpid()}\\)"):
            lock_data_dir(tmp_path)
    finally:
        held.close()
    lock_data_dir(tmp_path).close()  # free again once the holder let go


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; "
        "from streamrec.stream.data_dir import lock_data_dir; "
        "held = lock_data_dir(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
            lock_data_dir(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    lock_data_dir(tmp_path).close()
