"""bench pipeline's figures: latency quantiles, the per-stage breakdown of the slates, CPU time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

from streamrec.stream.threads import EVENT_LOOP, EXECUTOR, thread_roles
from streamrec.stream.tools.bench import PhaseResult
from streamrec.stream.tools.cpu import CHILDREN, OTHER, CpuSample, cpu_seconds, cpu_shares


def test_stage_times_are_summarised_per_stage_and_absent_for_the_passthrough() -> None:
    stages = {"encode": [float(n) for n in range(1, 101)], "queue": [5.0] * 100}
    figures = PhaseResult(100, 100, 2.0, [10.0] * 100, stages).figures()
    assert figures["events_per_s"] == 50.0
    assert figures["stages_ms"]["encode"] == {"p50": 50.5, "p99": 99.01}
    assert figures["stages_ms"]["queue"] == {"p50": 5.0, "p99": 5.0}
    assert "stages_ms" not in PhaseResult(10, 10, 1.0, [1.0], {}).figures()


def test_cpu_time_is_reported_per_event_when_measured() -> None:
    figures = PhaseResult(1_000, 1_000, 2.0, [1.0], {}, cpu_s=0.5).figures()
    assert figures["cpu_s"] == 0.5 and figures["events_per_cpu_s"] == 2_000.0
    assert "cpu_s" not in PhaseResult(10, 10, 1.0, [1.0], {}).figures()


def test_cpu_seconds_of_this_process_grow_with_work() -> None:
    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert 0.1 < cpu_seconds(os.getpid()) - before < 5


def test_cpu_seconds_count_a_live_child_process() -> None:
    """The model path runs in a child of the worker; its CPU is the worker's too."""
    burn = "import time\nt = time.process_time() + 0.3\nwhile time.process_time() < t: pass\n"
    child = subprocess.Popen([sys.executable, "-c", burn + "input()"], stdin=subprocess.PIPE)
    try:
        while cpu_seconds(child.pid) < 0.3:  # then it waits on its stdin, alive
            assert child.poll() is None
        assert cpu_seconds(os.getpid()) - time.process_time() >= 0.25
    finally:
        child.communicate(b"\n")


def test_rates_count_only_answered_events_and_a_shortfall_is_said() -> None:
    """A 1,000,000-event drain stopped waiting with 955,257 answered: its rate was printed
    over all the events."""
    short = PhaseResult(1_000, 900, 2.0, [1.0], {}, cpu_s=3.0)
    figures = short.figures()
    assert figures["events_per_s"] == 450.0 and figures["events_per_cpu_s"] == 300.0
    assert short.shortfall() is not None and "100 of 1000" in short.shortfall()
    assert PhaseResult(10, 10, 1.0, [1.0], {}).shortfall() is None


def _burn(seconds: float) -> None:
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass


def test_cpu_of_a_busy_thread_goes_to_its_role() -> None:
    main = threading.get_native_id()
    before = CpuSample.of([os.getpid()])
    _burn(0.3)
    shares = cpu_shares(before, CpuSample.of([os.getpid()]), {main: EVENT_LOOP})
    assert shares[EVENT_LOOP] > 0.5 and abs(sum(shares.values()) - 1.0) < 0.01


def test_shares_name_each_role_and_sum_to_one() -> None:
    before = CpuSample({1: 1.0, 2: 0.5}, children=2.0)
    after = CpuSample({1: 3.0, 2: 1.0, 3: 0.5}, children=3.0)  # thread 3 started meanwhile
    shares = cpu_shares(before, after, {1: EVENT_LOOP, 2: "AIOKafkaConsumerThread"})
    assert shares == {
        EVENT_LOOP: 0.5,
        CHILDREN: 0.25,
        OTHER: 0.125,
        "AIOKafkaConsumerThread": 0.125,
    }
    assert cpu_shares(before, before, {}) == {}
    figures = PhaseResult(10, 10, 1.0, [1.0], {}, cpu_share=shares).figures()
    assert figures["cpu_share"] == shares


def test_threads_are_named_by_what_they_run() -> None:
    class AIOKafkaConsumerThread:
        """Stands for the faust service a mode WorkerThread runs."""

    class WorkerThread(threading.Thread):
        service = AIOKafkaConsumerThread()

    stop = threading.Event()
    consumer = WorkerThread(target=stop.wait)
    consumer.start()

    async def on_executor() -> dict[str, str]:
        return await asyncio.to_thread(thread_roles)

    try:
        roles = asyncio.run(on_executor())
    finally:
        stop.set()
        consumer.join()
    assert roles[str(threading.get_native_id())] == EVENT_LOOP  # the main thread
    assert roles[str(consumer.native_id)] == "AIOKafkaConsumerThread"
    assert EXECUTOR in roles.values()  # the executor thread that listed them
