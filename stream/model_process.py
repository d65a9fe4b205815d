"""The model path in a child process, so it never competes with the event loop for the GIL.

In one process the model thread (encoder, FAISS, fusion, policy, reasons: about 1 ms of Python
and numpy per user) and the event loop (ingest, table writes, publishing) take turns on one
interpreter lock: at 1,000 events/s the worker process was measured at 90-100% of a core, so
every batch waited for ingest and every event for the batch. ``ModelProcess`` runs a
``ModelServer`` (stream/serving.py) in a child process, so the two run on two cores; this is
the same boundary a GPU model service shared by several workers would have. The child is a
fresh interpreter (``python -m streamrec.stream.model_process FD``) joined by a socket pair: a
fork of a process with faust's threads and sockets is unsafe, and multiprocessing's ``spawn``
would import the worker's main script again, which a script without a ``__main__`` guard
cannot survive.

The worker sends each batch as (user id, state, co-visitation lists, trending list) per user
with the fusion weights in use, and receives the ``BuiltBatch``; slates are those the
in-process path gives (tests/unit/stream/test_model_process.py). Loads and cold starts run on
a thread of the child, so a hot swap does not stop the batches, as in one process. The pipe
carries pickles, which is safe here only because both ends are this worker and the child it
spawned: nothing from the network is unpickled.

If the child dies, the calls waiting on it fail (the refresher re-queues its batch and retries)
and the next call starts a new child, which loads the last checkpoint with the catalog and the
last policy before it answers. The child exits when the worker's end of the pipe closes, so a
killed worker leaves no orphan.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamrec.errors import StreamrecError
from streamrec.index.config import IndexSettings
from streamrec.models.config import PolicySettings
from streamrec.models.policy.slate import FloatArray
from streamrec.models.policy.stochastic import policy_weights
from streamrec.stream.catalog import Unservable
from streamrec.stream.config import ServingSettings
from streamrec.stream.contract import Item
from streamrec.stream.fusion import Weights
from streamrec.stream.ranker import ranker_figures_of, ranker_state

if TYPE_CHECKING:
    from streamrec.stream.refresh import BuiltBatch, RefreshInput

log = logging.getLogger(__name__)
# One user of a batch as it crosses the pipe: what ModelBuilder reads of a RefreshInput.
Wire = tuple[str, Any, Any, Any]
# Next events waiting for the next batch; more than a restart's worth are not worth keeping.
OBSERVED_KEPT = 100_000


class ModelProcessError(StreamrecError):
    """The model's child process stopped; the next call starts a new one."""


class ModelProcess:
    """A ``ModelService`` whose model runs in a child process (see module docstring)."""

    def __init__(
        self,
        serving: ServingSettings,
        policy: PolicySettings,
        index: IndexSettings,
        device: str,
        weights: Callable[[], Weights],
    ) -> None:
        self.settings = (serving, policy, index, device)
        self.weights = weights
        # Never held while blocked on the socket, so the reader can always hand answers over.
        self._lock = threading.Lock()  # guards the connection, its child and their waiters
        self._sending = threading.Lock()  # one writer on the socket at a time; one start
        self._conn: Connection | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._waiting: dict[int, Future[Any]] = {}
        self._ids = itertools.count()
        self._version: str | None = None
        self._index_size: int | None = None
        # What a new child must be given to serve as the last one did.
        self._checkpoint: Path | None = None
        self._catalog: dict[str, Item] = {}
        self._policy: tuple[FloatArray, str] | None = None
        self._policy_sent: tuple[FloatArray, str] | None = None  # what the child serves
        self._observed: deque[tuple[str, str]] = deque(maxlen=OBSERVED_KEPT)
        self._ranker_figures: dict[str, object] | None = None
        self._ranker: tuple[Mapping[str, float], int] | None = None  # to start a child's from
        self._ranker_sent: tuple[Mapping[str, float], int] | None = None
        self._unservable = Unservable(frozenset(), None)  # what the catalog lets no slate show
        self._unservable_sent: Unservable | None = self._unservable  # what the child excludes

    @property
    def builder(self) -> ModelProcess | None:
        return self if self._version is not None else None

    @property
    def model_version(self) -> str | None:
        return self._version

    @property
    def index_size(self) -> int | None:
        return self._index_size

    def build(self, batch: list[RefreshInput], slate_size: int) -> BuiltBatch:
        """As ``build_async``, blocking the calling thread."""
        started = time.perf_counter()
        return self._built(
            started, self._submit("build", self._request(batch, slate_size)).result()
        )

    async def build_async(self, batch: list[RefreshInput], slate_size: int) -> BuiltBatch:
        """Build on the child, awaited on the event loop: the answer wakes the loop straight
        from the reader thread. Through a worker thread it took two more thread hand-offs, each
        waiting for the interpreter lock (the ``ipc`` stage: 2.9 ms at p50)."""
        started = time.perf_counter()
        request = self._request(batch, slate_size)
        future = self._try_submit("build", request)
        if future is None:  # a child to start (it is sent the catalog) or another send under way
            future = await asyncio.to_thread(self._submit, "build", request)
        return self._built(started, await asyncio.wrap_future(future))

    def _request(self, batch: list[RefreshInput], slate_size: int) -> tuple[Any, ...]:
        wire = [(e.pending.user_id, e.state, e.covisits, e.trending) for e in batch]
        observed = [self._observed.popleft() for _ in range(len(self._observed))]
        return (dict(self.weights()), observed, wire, slate_size)

    def _built(
        self, started: float, reply: tuple[BuiltBatch, dict[str, object] | None]
    ) -> BuiltBatch:
        built, self._ranker_figures = reply
        # the round trip beyond the child's own stages: pickling, the pipe, waiting for threads
        total_ms = (time.perf_counter() - started) * 1e3
        built.timing_ms["ipc_ms"] = max(0.0, total_ms - sum(built.timing_ms.values()))
        return built

    def load(self, checkpoint: Path, catalog: dict[str, Item]) -> str:
        version, size = self._submit("load", (checkpoint, catalog)).result()
        self._checkpoint, self._catalog = checkpoint, dict(catalog)
        self._version, self._index_size = version, size
        return str(version)

    def add_items(self, items: list[Item]) -> int:
        added, size = self._submit("add_items", (items,)).result()
        self._catalog.update((item.item_id, item) for item in items)
        self._index_size = size
        return int(added)

    def observe(self, user_id: str, item_id: str) -> None:
        """A user's next event, for the child's learned ranker: kept here (on the event loop)
        and sent with the next batch, so the child learns from it before it builds that batch."""
        self._observed.append((user_id, item_id))

    def ranker_figures(self) -> dict[str, object] | None:
        """The child's learned-ranker figures as of its last batch; before one, the weights
        it was given to start from (so a save then keeps them)."""
        if self._ranker_figures is None and self._ranker is not None:
            return ranker_figures_of(self._ranker)
        return self._ranker_figures

    def set_unservable(self, unservable: Unservable) -> None:
        """What the catalog lets no slate show (sent to the child with the next request)."""
        self._unservable = unservable

    def set_ranker(self, weights: Mapping[str, float], updates: int) -> None:
        """Start the child's learned ranker from these weights (sent with the next request)."""
        self._ranker = (weights, updates)

    def set_policy(self, weights: FloatArray, version: str) -> None:
        """Serve the learner's policy from the next batch on. Called on the event loop, so it
        only records it: the next request carries it to the child, so weights the child's
        reranker would refuse are refused here (ConfigError), before they are kept."""
        self._policy = (policy_weights(weights), version)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        if self._child is not None:
            _reap(self._child)

    def _submit(self, op: str, args: tuple[Any, ...]) -> Future[Any]:
        """Send one request, starting a child first if there is none; its future resolves on
        the reader thread."""
        with self._sending:
            return self._send(self._conn or self._start(), op, args)

    def _try_submit(self, op: str, args: tuple[Any, ...]) -> Future[Any] | None:
        """As ``_submit`` when that cannot block: None when a child must be started or another
        thread is sending (a load's catalog), which the event loop must not wait for."""
        if not self._sending.acquire(blocking=False):
            return None
        try:
            return self._send(self._conn, op, args) if self._conn is not None else None
        finally:
            self._sending.release()

    def _send(self, conn: Connection, op: str, args: tuple[Any, ...]) -> Future[Any]:
        """One request on ``conn`` (sending lock held), the learner's policy first if new."""
        future: Future[Any] = Future()
        with self._lock:
            request_id = next(self._ids)
            self._waiting[request_id] = future
        try:
            if self._policy is not self._policy_sent:
                conn.send((-1, "policy", self._policy))
                self._policy_sent = self._policy
            if self._unservable is not self._unservable_sent:
                conn.send((-1, "unservable", (self._unservable,)))
                self._unservable_sent = self._unservable
            if self._ranker is not self._ranker_sent:
                conn.send((-1, "ranker", self._ranker))
                self._ranker_sent = self._ranker
            conn.send((request_id, op, args))
        except OSError as exc:  # the child is gone: the next call starts another
            with self._lock:
                self._waiting.pop(request_id, None)
                if self._conn is conn:
                    self._conn = None
            raise ModelProcessError(f"model process unreachable: {exc}") from exc
        return future

    def _start(self) -> Connection:
        """Start a child and bring it to the state the last one served (sending lock held)."""
        ours, theirs = socket.socketpair()
        child = subprocess.Popen(
            [sys.executable, "-m", __name__, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        conn = Connection(ours.detach())
        waiting: dict[int, Future[Any]] = {}
        with self._lock:
            self._conn, self._child, self._waiting = conn, child, waiting
        self._policy_sent = None
        # A new child's ranker continues from what the last one had learned.
        self._ranker = ranker_state(self._ranker_figures) or self._ranker
        self._ranker_sent = None
        self._unservable_sent = None
        reader = threading.Thread(
            target=self._read, args=(conn, child, waiting), name="model-process reader", daemon=True
        )
        reader.start()
        conn.send(self.settings)
        if self._checkpoint is not None:
            log.warning("model process restarted: loading %s again", self._checkpoint)
            with self._lock:
                request_id = next(self._ids)
                waiting[request_id] = Future()  # nobody waits: the child holds batches for it
            conn.send((request_id, "load", (self._checkpoint, self._catalog)))
        return conn

    def _read(
        self,
        conn: Connection,
        child: subprocess.Popen[bytes],
        waiting: dict[int, Future[Any]],
    ) -> None:
        """Hand each answer of this child to its caller; when it is gone, fail the rest."""
        while True:
            try:
                request_id, ok, value = conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                future = waiting.pop(request_id, None)
            if future is not None:
                (future.set_result if ok else future.set_exception)(value)
        _reap(child)
        with self._lock:
            if self._conn is conn:
                self._conn = None
            left = list(waiting.values())
            waiting.clear()
        if left:
            log.error("model process exited (%s); restarting at the next call", child.returncode)
        for future in left:
            future.set_exception(ModelProcessError(f"model process exited ({child.returncode})"))


def serve(
    conn: Connection,
    serving: ServingSettings,
    policy: PolicySettings,
    index: IndexSettings,
    device: str,
) -> None:
    """The child's main loop: builds on this thread, loads and cold starts on another."""
    import torch

    from streamrec.stream.refresh import Pending, RefreshInput
    from streamrec.stream.serving import ModelServer

    torch.set_num_threads(serving.model_threads)
    weights: list[Weights] = [{}]
    server = ModelServer(serving, policy, index, device, lambda: weights[0])
    send_lock = threading.Lock()
    slow = ThreadPoolExecutor(1, thread_name_prefix="model-load")
    loads: list[Future[None]] = []  # a batch sent right after a (re)start waits for its model

    def answer(request_id: int, work: Callable[..., Any], *args: Any) -> None:
        try:
            reply: tuple[int, bool, Any] = (request_id, True, work(*args))
        except Exception as exc:  # the worker decides; the child keeps serving
            reply = (request_id, False, _sendable(exc))
        with send_lock:
            conn.send(reply)

    def build(
        observed: list[tuple[str, str]], wire: list[Wire], slate_size: int
    ) -> tuple[BuiltBatch, dict[str, object] | None]:
        batch = [RefreshInput(Pending(u, 0, st), st, cov, tr) for u, st, cov, tr in wire]
        if server.builder is None:
            wait(loads)
        builder = server.builder
        if builder is None:
            raise ModelProcessError("no model loaded in the model process")
        for user_id, item_id in observed:
            builder.observe(user_id, item_id)
        return builder.build(batch, slate_size), server.ranker_figures()

    def load(checkpoint: Path, catalog: dict[str, Item]) -> tuple[str, int | None]:
        return server.load(checkpoint, catalog), server.index_size

    def add_items(items: list[Item]) -> tuple[int, int | None]:
        return server.add_items(items), server.index_size

    while True:
        try:
            request_id, op, args = conn.recv()
        except (EOFError, OSError):
            return  # the worker closed its end or died: nothing left to serve
        if op == "policy":
            server.set_policy(*args)
        elif op == "ranker":
            server.set_ranker(*args)
        elif op == "unservable":
            server.set_unservable(*args)
        elif op == "build":
            weights[0] = args[0]
            answer(request_id, build, *args[1:])
        elif op == "load":
            loads.append(slow.submit(answer, request_id, load, *args))
        elif op == "add_items":
            slow.submit(answer, request_id, add_items, *args)


def _reap(child: subprocess.Popen[bytes]) -> None:
    """Wait briefly for a child whose pipe closed; one that lingers is killed."""
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _sendable(exc: Exception) -> Exception:
    """The exception itself when it survives the pipe, else one that says what it was."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return ModelProcessError(f"{type(exc).__name__}: {exc}")
    return exc


if __name__ == "__main__":  # the child: python -m streamrec.stream.model_process FD
    # The package module's names, not this __main__ copy's, so its exceptions unpickle there.
    from streamrec.stream.model_process import serve as serve_in_child

    pipe = Connection(int(sys.argv[1]))
    serve_in_child(pipe, *pipe.recv())
