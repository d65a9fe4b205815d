"""CPU seconds a process and its live children have used, from Linux ``/proc``: what the
benchmarks report beside events/s, because on a shared machine events/s says what a process got
and events per CPU-second what it can do. Also per thread, so a worker's CPU can be split between
its event loop, faust's consumer thread and its model process (stream/threads.py names them)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CHILDREN, OTHER = "child processes", "other threads"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its live children (Linux ``/proc``)."""
    return _own_cpu_seconds(pid) + sum(_gone_is_zero(kid) for kid in _children(pid))


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds so far of each thread of some processes, and of their live children."""

    threads: dict[int, float]
    children: float

    @classmethod
    def of(cls, pids: Iterable[int]) -> CpuSample:
        threads: dict[int, float] = {}
        children = 0.0
        for pid in pids:
            for task in Path(f"/proc/{pid}/task").iterdir():
                threads[int(task.name)] = _thread_cpu_seconds(task / "stat")
                children += sum(_gone_is_zero(kid) for kid in _task_children(task))
        return cls(threads, children)


def cpu_shares(before: CpuSample, after: CpuSample, roles: Mapping[int, str]) -> dict[str, float]:
    """Each role's share of the CPU used between two samples: threads by ``roles`` (thread id ->
    role; unnamed ones are ``other threads``), the children (a worker's model process) as one.
    A thread that ended between the samples is not counted (its task is gone from ``/proc``)."""
    used: dict[str, float] = {CHILDREN: max(0.0, after.children - before.children)}
    for tid, seconds in after.threads.items():
        role = roles.get(tid, OTHER)
        used[role] = used.get(role, 0.0) + max(0.0, seconds - before.threads.get(tid, 0.0))
    total = sum(used.values())
    if total <= 0:
        return {}
    ordered = sorted(used.items(), key=lambda kv: -kv[1])
    return {role: round(s / total, 3) for role, s in ordered if s / total >= 0.0005}


def _children(pid: int) -> list[int]:
    """Live child processes of any thread of ``pid`` (each task lists those it started)."""
    return [kid for task in Path(f"/proc/{pid}/task").iterdir() for kid in _task_children(task)]


def _task_children(task: Path) -> list[int]:
    try:
        return [int(k) for k in (task / "children").read_text().split()]
    except FileNotFoundError:  # a thread that ended since it was listed
        return []


def _gone_is_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except FileNotFoundError:  # a child that exited since it was listed
        return 0.0


def _thread_cpu_seconds(stat: Path) -> float:
    try:
        return _stat_cpu_seconds(stat)
    except FileNotFoundError:  # a thread that ended since it was listed
        return 0.0


def _own_cpu_seconds(pid: int) -> float:
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def _stat_cpu_seconds(path: Path) -> float:
    stat = path.read_text()
    # Fields after the command name, which is in parentheses and may hold spaces: utime and
    # stime are fields 14 and 15 of the whole line, in clock ticks.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
