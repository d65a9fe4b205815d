"""CPU seconds a process and its live children have used, from Linux ``/proc``: what the
benchmarks report beside events/s, because on a shared machine events/s says what a process got
and events per CPU-second what it can do."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its live children (Linux ``/proc``)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(k) for k in children.read_text().split()] if children.exists() else []
    return _own_cpu_seconds(pid) + sum(_gone_is_zero(kid) for kid in kids)


def _gone_is_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except FileNotFoundError:  # a child that exited since it was listed
        return 0.0


def _own_cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which is in parentheses and may hold spaces: utime and
    # stime are fields 14 and 15 of the whole line, in clock ticks.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
