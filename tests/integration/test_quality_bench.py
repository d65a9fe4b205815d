"""``streamrec bench quality`` end to end on the session broker, heuristic mode, small scale.

The quality ratio is printed, never asserted: at this scale it is noise. What is asserted is
that the instrument measured something: scoreable and covered events, and figures in range.
"""

from __future__ import annotations

from pathlib import Path

from streamrec.settings import KafkaSettings, Settings
from streamrec.stream.tools.quality_bench import QualityOptions, measure_quality

EVENTS = 3000  # the first 3,000 MovieLens-100K events by time: a few seconds at 1,000/s


def test_heuristic_bench_scores_the_slates_it_reads_back(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    options = QualityOptions(
        mode="heuristic",
        rate=1000.0,
        split=0.5,
        out=tmp_path / "run",
        plot=tmp_path / "run" / "ndcg.png",
        limit=EVENTS,
    )
    figures = measure_quality(
        Settings(kafka=kafka_settings), options, kafka_settings.bootstrap_servers
    )

    heuristic = figures["heuristic"]
    print(
        f"heuristic NDCG@10 / last-item co-visitation on {heuristic['covered']} covered events: "
        f"{heuristic['ndcg@10_ratio_to_covisit']}; slate coverage {heuristic['slate_coverage']}"
    )
    assert figures["events"] == EVENTS
    assert heuristic["answered_events"] == EVENTS  # every event was answered by some slate
    assert 0 < figures["scoreable"] <= EVENTS - figures["first_scored_event"]
    assert 0 < heuristic["covered"] <= figures["scoreable"]
    assert 0 < heuristic["slate_coverage"] <= 1
    blocks = [
        heuristic[name]
        for name in (
            "covered_events",
            "all_scoreable",
            "covisit_on_covered",
            "popularity_on_covered",
        )
    ]
    blocks += figures["baselines_on_all_scoreable"].values()
    for block in blocks:
        assert set(block) == {"hr@10", "ndcg@10", "mrr@10"}
        assert all(0.0 <= value <= 1.0 for value in block.values())
    for share in ("seen_share", "catalog_coverage"):
        assert 0.0 <= heuristic[share] <= 1.0
    assert heuristic["latency_p99_ms"] is not None  # every slate's trigger was found
    assert Path(figures["plot"]).stat().st_size > 0
