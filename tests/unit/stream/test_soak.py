"""The soak's synthetic stream (uniform users, Zipf-popular items, time order), its RSS reading
and its plot; the run itself is `streamrec bench soak` (minutes of CPU, not a unit test)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from streamrec.stream.soak import Sample, SoakOptions, plot, rss_mib, synthetic_events


def test_synthetic_events_are_in_time_order_with_zipf_items_and_uniform_users() -> None:
    options = SoakOptions(events=20_000, users=2_000, items=500, zipf=1.1, seed=3)
    events = list(synthetic_events(options, chunk=3_000))
    assert len(events) == 20_000 and len({e.event_id for e in events}) == 20_000
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    items = Counter(e.item_id for e in events)
    # Zipf 1.1 over 500 items: the most popular item alone takes about 15% of the traffic,
    # and the popularity order follows the item rank.
    assert 0.10 < items["i0"] / 20_000 < 0.20
    assert items["i0"] > items["i1"] > items["i10"] > items["i100"]
    users = Counter(e.user_id for e in events)
    assert len(users) > 0.99 * 2_000 and max(users.values()) < 30  # about 10 each
    assert list(synthetic_events(options, chunk=3_000))[:50] == events[:50]  # seeded


def test_rss_of_this_process_is_read_from_proc() -> None:
    assert 10 < rss_mib(os.getpid()) < 100_000


def test_the_plot_is_written(tmp_path: Path) -> None:
    samples = [Sample(0, 0, 0, 300.0), Sample(5, 50_000, 40_000, 420.0)]
    plot(samples, tmp_path / "rss.png", SoakOptions(events=50_000))
    assert (tmp_path / "rss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
