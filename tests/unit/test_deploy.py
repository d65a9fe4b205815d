"""docker-compose.yml is valid for a compose front end, and the Prometheus files parse."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streamrec.stream.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_file_validates() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip(
            "neither `docker compose` nor Debian's `docker-compose` is installed "
            "(make setup installs docker-compose when apt is usable)"
        )
    result = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"kafka", "worker", "prometheus"} <= services.keys()
    assert services["kafka"]["image"].startswith("apache/kafka:")


def test_prometheus_scrapes_the_worker_port_from_compose() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    port = compose["services"]["worker"]["environment"]["STREAMREC_SERVING__WEB_PORT"]
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"worker:{port}"]
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    assert all("expr" in r for g in rules["groups"] for r in g["rules"])


def test_alert_rules_use_only_metrics_the_worker_exports() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    # Labelled families have no samples until used: derive the series names from the families.
    suffixes = ("", "_total", "_bucket", "_sum", "_count")
    exported = {family.name + suffix for family in registry.collect() for suffix in suffixes}
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"streamrec_[a-z_]+", rule["expr"])
    }
    assert used and used <= exported, sorted(used - exported)
