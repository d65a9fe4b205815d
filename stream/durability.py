"""Write-before-commit ordering that faust-streaming 0.15.3 leaves open, closed here.

The worker's state is its changelog: a table write is durable once its changelog record is in
Kafka. At-least-once state needs two orderings that faust does not enforce on its own:

1. **Changelog before offsets.** faust commits an event's offset once the agent has finished
   with it, but the table writes it made are still in the producer buffer (``send_soon``).
   A crash between the commit and the send loses those writes while the events count as done.
   ``flush_before_commit`` makes every commit first flush the worker's own write-behind
   buffers (stream/write_behind.py) and then wait until the producer is drained.
2. **Changelog before hand-over.** On revoke faust flushes the producer, but
   ``ProducerBuffer.flush`` gives up as soon as one send takes longer than 0.1 s (a busy
   machine), and the rest are sent *after* the partition's next owner has started restoring
   the table: that owner never sees them, and they land behind its own writes (a zombie write
   that rolls a user back). ``drain`` waits for every buffered write's acknowledgement:
   every send given to faust's buffer since ``flush_before_commit`` first ran
   (``compat.track_sends``), not only those still in its queue. The buffer's sender task
   takes a send off the queue and then awaits aiokafka, which holds it outside any batch
   while that partition's batch is full (until the request before it is answered; a
   user_state value is 3-17 KB, a batch 16 KB). A drain that found the queue empty then
   waited only for the batches already there and returned with that write unsent, so a
   commit could go out before the write of an event it covers was acknowledged (a crash
   then loses the write; a later drain, as at a hand-over, does cover it).

And one bookkeeping fix: faust forgets a revoked partition's acked offsets at the start of the
revoke, but events finishing during the revoke re-add theirs. If the partition comes back, those
stale offsets count as processed and a commit can jump over events nobody applied.
``forget_acks`` clears them when partitions are assigned, before the first event is processed.
Because the writes drain before a commit, a commit can outlast a rebalance; one whose offsets
were taken under the previous assignment is dropped rather than sent.

And one fetch fix: no record may be skipped on the way in. While the changelogs recover, faust
pauses the events partitions by leaving them out of the set of partitions each fetch takes,
and aiokafka reads that set live. When recovery ends, faust pauses the changelogs, then resumes
the events partitions and seeks them to their committed offsets. For that moment the set is
empty, and aiokafka reads an empty set as "every partition": a fetch then returns up to 500
buffered records of an events partition and moves its position past them, and faust drops them
because it did not ask for that partition. The restarted worker then read the next records
before the seek took effect: it applied later offsets before earlier ones (state and item
statistics take an event below a partition's last applied offset for a redelivery, so the
earlier ones were lost), and when that batch was still being handed to the agent after the
seek, it moved faust's read offset past the re-read records, which faust then dropped as
already read. They were never acked, and since faust commits only up to the first gap in the
acked offsets, that partition's commit stayed at its pre-kill offset for good (seen in CI after
kill -9, about every other run). ``fetch_only_active`` gives aiokafka a view of the set that is
never empty, so a fetch takes only records of partitions faust is fetching.

And one more at the end of recovery: faust resumes its flow while the changelogs are read (or
right away when there is nothing to read), then resumes the events partitions, awaits the seek
to their committed offsets, and only then resumes its flow control, which empties every stream
buffer. Records fetched during that seek were put in the agent's buffer, and faust's read offset
moved past them; the agent handled the first few, the rest were thrown away unhandled and never
re-read. The seek also moved the read offset back to the committed one, so the next record of
the batch counted as a jump over an offset gap, which a commit passes (and a partition with no
commit yet commits its first run of handled offsets, whatever lies before it). Seen with a third
worker joining and leaving mid-stream: offsets 143-146 of one partition handled by no worker,
its commit stuck there for good; 199-201 of another skipped and committed over. Events that
arrive just as recovery ends are lost this way: most likely the two misplaced events the
forwarding test once found never forwarded although its group had committed every record.
``ResumeHold`` (stream/resume_hold.py) holds the events partitions' resume back until the
rebalance has ended, after that emptying, so none is fetched before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from faust.types import TP

from streamrec.errors import BrokerError
from streamrec.stream.compat import (
    commit_only,
    flush_client,
    pending_sends,
    track_sends,
    wrap_commit,
)

# A revoked partition's writes must be acknowledged before the group's rebalance timeout (faust's
# broker_rebalance_timeout, 60 s) passes and the next owner starts restoring; a commit, which
# hands nothing over, waits as long as the worker waits for the broker (kafka.outage_limit_s).
DRAIN_TIMEOUT_S = 30.0


async def drain(producer: Any, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """Wait until every table write buffered so far is acknowledged by Kafka (each send given
    to faust's buffer, also one its sender has taken off the queue: ``compat.track_sends``).

    Writes queued later may still be in flight: under steady load the buffer never empties, so
    waiting for "empty" could block a commit forever. Raises BrokerError after ``timeout_s``:
    a worker that cannot make its writes durable must stop, not commit or hand over (during a
    broker outage stream/health.py's watch usually stops it first, with a clearer message).
    """
    queued = pending_sends(producer)
    try:
        await asyncio.wait_for(asyncio.gather(*queued), timeout_s)
        await asyncio.wait_for(flush_client(producer), timeout_s)
    except TimeoutError as exc:
        raise BrokerError(
            f"table writes unacknowledged after {timeout_s:.0f} s; is the broker reachable?"
        ) from exc


CommitOffsets = Callable[..., Awaitable[bool]]


def flush_before_commit(
    consumer: Any,
    producer: Any,
    before: Callable[[], Awaitable[Any]] | None = None,
    timeout_s: float = DRAIN_TIMEOUT_S,
    owned: Callable[[TP], bool] = lambda tp: True,
    after: Callable[[], Awaitable[Any]] | None = None,
) -> None:
    """Make ``consumer`` run ``before`` (writes still buffered in the worker: write_behind.py),
    then drain ``producer`` for at most ``timeout_s``, before every offset commit (idempotent).

    The worker passes ``kafka.outage_limit_s``: during a broker outage the commit waits with
    its writes instead of ending the worker after 30 s (a commit that raises crashes faust's
    consumer, and the worker with it). Offsets of partitions ``owned`` says are not the
    worker's now are left out. ``after`` runs once the producer drained (ingest's forwards:
    raising there stops the commit, and the worker).
    """

    def durable(commit: CommitOffsets) -> CommitOffsets:
        async def commit_durably(offsets: Mapping[TP, int], *args: Any, **kwargs: Any) -> bool:
            generation = consumer.app.consumer_generation_id
            if before is not None:
                await before()
            await drain(producer, timeout_s)
            if after is not None:
                await after()
            if consumer.app.consumer_generation_id != generation:
                # A rebalance ran while the writes drained: these offsets were taken under the
                # old assignment, and committing them now can move a partition back behind
                # offsets already re-read and acked, a gap no later commit passes (seen in CI:
                # the commit of a partition stuck for good). The next commit covers them.
                return False
            return await commit(offsets, *args, **kwargs)

        return commit_durably

    # Before any event of the assignment writes: a drain waits for what is tracked from here.
    track_sends(producer)
    wrap_commit(consumer, durable)
    # While partitions are being revoked the worker owns none, and ingest skips their records
    # unapplied; faust still counts a skipped record as processed, and a commit of it (faust
    # commits while revoking) would hide it from the next owner, who starts at the committed
    # offset (seen in CI: two users lost their first 89 events). Not committing them costs
    # only a longer re-read, which is idempotent.
    commit_only(consumer, owned)
