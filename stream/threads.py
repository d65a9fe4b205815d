"""What each thread of a worker process does, by its kernel thread id, so CPU time read from
Linux ``/proc/<pid>/task`` (``streamrec bench pipeline``) can be told apart: the event loop,
faust's Kafka consumer thread, the executor threads. Python names no thread in the kernel (every
task of the worker is ``python`` in ``/proc``), so the worker reports the ids in ``/stats``."""

from __future__ import annotations

import threading

EVENT_LOOP, EXECUTOR = "event loop", "executor"


def thread_roles() -> dict[str, str]:
    """Kernel thread id (as text, a JSON key) -> role of every live Python thread."""
    return {
        str(thread.native_id): _role(thread)
        for thread in threading.enumerate()
        if thread.native_id is not None
    }


def _role(thread: threading.Thread) -> str:
    if thread is threading.main_thread():
        return EVENT_LOOP
    # mode's WorkerThread runs one faust service (its consumer, a threaded producer) on a loop
    # of its own: named by the service's class, e.g. AIOKafkaConsumerThread.
    service = getattr(thread, "service", None)
    if service is not None:
        return type(service).__name__
    if thread.name.startswith("asyncio_"):  # asyncio.to_thread's default executor
        return EXECUTOR
    return thread.name
