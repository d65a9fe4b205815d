"""The reference for ``streamrec bench pipeline``: a Faust agent that forwards each event.

It uses the same broker, topics, partition count, poll bound and at-least-once commit as the
real worker, and nothing else: no validation, no state, no model. The pipeline's throughput is
reported as a ratio to this agent's, measured in the same run.

Run as
``python -m streamrec.stream.tools.passthrough BOOTSTRAP IN_TOPIC OUT_TOPIC APP_ID WEB_PORT``.
"""

from __future__ import annotations

import sys
from typing import Any

import faust


def build(
    bootstrap: str, source: str, sink: str, app_id: str, web_port: int, partitions: int
) -> faust.App:
    """A faust app whose one agent copies ``source`` records to ``sink`` with the same key."""
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=500,
        topic_partitions=partitions,
        web_port=web_port,
        web_bind="127.0.0.1",
    )
    raw: dict[str, Any] = {
        "key_serializer": "raw",
        "value_serializer": "raw",
        "partitions": partitions,
    }
    in_topic = app.topic(source, **raw)
    out_topic = app.topic(sink, **raw)

    async def forward(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await out_topic.send(key=event.key, value=event.value)

    app.agent(in_topic, name="passthrough")(forward)
    return app


def main() -> None:
    bootstrap, source, sink, app_id, web_port, partitions = sys.argv[1:7]
    app = build(bootstrap, source, sink, app_id, int(web_port), int(partitions))
    faust.Worker(app, loglevel="warning").execute_from_commandline()


if __name__ == "__main__":
    main()
