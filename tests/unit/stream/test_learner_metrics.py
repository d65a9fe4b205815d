"""The learner process's /metrics: what its service counted, scraped over HTTP."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from streamrec.broker import free_port
from streamrec.errors import ConfigError
from streamrec.settings import Settings
from streamrec.stream.learner_metrics import serve_metrics
from streamrec.stream.learner_process import open_service


def test_a_scrape_reads_the_services_counts_and_version(tmp_path: Path) -> None:
    service = open_service(Settings(), tmp_path)
    port = free_port()
    serve_metrics(service, port)
    service.handle(0, 0, b"not an experience record")  # counted as bad, live
    service.counts["dup"] += 2
    service.lag = {0: 7, 2: 0}
    service.polled_at -= 42.0  # its read loop last polled 42 s ago
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'streamrec_learner_experience_records_total{outcome="bad"} 1.0' in text
    assert 'streamrec_learner_experience_records_total{outcome="dup"} 2.0' in text
    assert "streamrec_learner_updates_total 0.0" in text
    assert 'streamrec_learner_lag_records{partition="0"} 7.0' in text
    assert 'streamrec_learner_lag_records{partition="2"} 0.0' in text
    (age,) = [line for line in text.splitlines() if line.startswith("streamrec_learner_poll_age")]
    assert 42.0 <= float(age.split()[1]) < 100.0
    assert f'streamrec_learner_policy_info{{version="{service.learner.version}"}} 1.0' in text
    assert "streamrec_learner_holding 0.0" in text
    service.learner.guard.holding = "pl-0"  # a rollback to pl-0 just happened
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert "streamrec_learner_holding 1.0" in response.read().decode()


def test_a_port_in_use_is_a_one_line_config_error(tmp_path: Path) -> None:
    service = open_service(Settings(), tmp_path)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        with pytest.raises(ConfigError, match="learner metrics port"):
            serve_metrics(service, taken.getsockname()[1])
