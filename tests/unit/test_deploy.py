"""The deployment files: compose stack, image, Prometheus rules, Grafana dashboard, Kubernetes.

Tools a check needs (a compose front end, promtool, kubernetes-validate, kubectl for the
overlays) are installed by `make setup` where possible; a check whose tool is missing skips with
the reason, and in CI (``CI=true``) fails instead, except for kubectl, which set-up does not
install (the base manifests and the patches are still checked without it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from streamrec.broker import pinned_version
from streamrec.settings import Settings
from streamrec.stream.learner_metrics import LearnerCollector
from streamrec.stream.learner_process import open_service
from streamrec.stream.metrics import WorkerMetrics
from streamrec.stream.trainer import ContinualTrainer
from streamrec.stream.trainer_metrics import TrainerCollector

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/streamrec.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
K8S = ROOT / "deploy/k8s"
METRIC = re.compile(r"\bstreamrec_[a-z0-9_]+")


def _missing(what: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing in CI, where `make setup` must have installed it")
    pytest.skip(f"{what} is missing (`make setup` installs it)")


# -- compose and image -------------------------------------------------------------------------


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
    assert {"kafka", "worker", "prometheus", "grafana"} <= services.keys()
    assert services["kafka"]["image"].startswith("apache/kafka:")


def test_worker_listens_on_all_interfaces_in_compose_and_image() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["worker"]["environment"]["STREAMREC_SERVING__WEB_BIND"] == "0.0.0.0"
    env = dict(
        re.findall(r"^ENV (STREAMREC_\w+)=(\S+)$", (ROOT / "deploy/Dockerfile").read_text(), re.M)
    )
    assert env["STREAMREC_SERVING__WEB_BIND"] == "0.0.0.0"
    assert all(_setting_path(name) for name in env)


def test_compose_runs_the_kafka_version_the_tests_prove() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{pinned_version()}"


def test_grafana_is_provisioned_from_the_repository() -> None:
    grafana = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    mounts = dict(v.removesuffix(":ro").split(":") for v in grafana["volumes"])
    assert mounts == {
        "./deploy/grafana/provisioning": "/etc/grafana/provisioning",
        "./deploy/grafana/dashboards": "/var/lib/grafana/dashboards",
    }
    assert all((ROOT / source).is_dir() for source in mounts)
    provisioning = ROOT / "deploy/grafana/provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"  # the compose service and its port
    (provider,) = yaml.safe_load((provisioning / "dashboards/streamrec.yml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == source["uid"]


def test_prometheus_scrapes_the_worker_port_from_compose() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    port = compose["services"]["worker"]["environment"]["STREAMREC_SERVING__WEB_PORT"]
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"worker:{port}"]


# -- metrics: alert rules and dashboard ----------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    return [target["expr"] for panel in _panels() for target in panel["targets"]]


def alert_queries() -> list[str]:
    """Every PromQL expression of the alert rules."""
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def metric_names(queries: list[str]) -> set[str]:
    """The streamrec series names the queries read."""
    return {name for query in queries for name in METRIC.findall(query)}


def _never(*args: object) -> Any:
    raise AssertionError("the trainer's metrics only read its counters")


def test_dashboard_and_alerts_use_only_metrics_the_processes_define(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    registry.register(LearnerCollector(open_service(Settings(), tmp_path)))  # shared learner
    trainer = ContinualTrainer(Settings().trainer, _never, _never, _never, tmp_path / "trainer")
    registry.register(TrainerCollector(trainer))  # the continual trainer
    # Labelled families have no samples until used: derive the series names from the families.
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    defined = {f.name + s for f in registry.collect() for s in suffixes[f.type]}
    for queries in (dashboard_queries(), alert_queries()):
        used = metric_names(queries)
        assert used and used <= defined, sorted(used - defined)


def test_dashboard_shows_what_ops_watch() -> None:
    used = metric_names(dashboard_queries())
    wanted = {
        "streamrec_events_consumed_total",
        "streamrec_events_accepted_total",
        "streamrec_events_dead_lettered_total",
        "streamrec_events_rejected_total",  # by code
        "streamrec_consumer_lag_records",  # per partition
        "streamrec_event_to_recommendation_seconds_bucket",
        "streamrec_refresh_batch_users_bucket",
        "streamrec_refresh_stage_seconds_bucket",
        "streamrec_table_flush_seconds_bucket",
        "streamrec_table_writes_pending",
        "streamrec_reward_total",  # by type
        "streamrec_policy_updates_total",
        "streamrec_policy_rollbacks_total",
        "streamrec_model_info",
    }
    assert wanted <= used, sorted(wanted - used)
    by_label = " ".join(dashboard_queries())
    for label in ("code", "partition", "stage", "table", "type", "version"):
        assert f"by ({label})" in by_label or f"le, {label})" in by_label, label


def test_dashboard_layout_is_well_formed() -> None:
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
    for panel in _panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]


def _promtool() -> str:
    found = shutil.which("promtool") or shutil.which("promtool", path=str(ROOT / ".venv/bin"))
    if found is None:
        _missing("promtool (Debian's prometheus package; scripts/ensure-promtool)")
    return found


def _check_rules(path: Path) -> None:
    result = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def test_alert_rules_pass_promtool() -> None:
    _check_rules(ALERTS)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses rule expressions; Grafana's variables become what Grafana substitutes.
    grafana = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".*"}
    rules = []
    for n, query in enumerate(dashboard_queries()):
        for variable, value in grafana.items():
            query = query.replace(variable, value)
        assert "$" not in query, query
        rules.append({"record": f"streamrec:dashboard_query_{n}", "expr": query})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _check_rules(path)


# -- Kubernetes ------------------------------------------------------------------------------------


def _setting_path(env_name: str) -> bool:
    """Whether ``STREAMREC_<SECTION>__<FIELD>...`` names a real field of ``Settings``."""
    model: type[BaseModel] | None = Settings
    for part in env_name.removeprefix("STREAMREC_").lower().split("__"):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        # A section (another model) to descend into, or a leaf field.
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    return model is None  # a leaf, not a whole section


def _manifests(folder: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(folder.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            yield path, doc


def _kustomizations() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in _manifests(K8S) if d["kind"] == "Kustomization"]


def _k8s_objects(folder: Path = K8S) -> list[tuple[Path, dict[str, Any]]]:
    """Whole Kubernetes objects: not kustomizations, not patches of a base object."""
    patches = {
        (p.parent / patch["path"]).resolve()
        for p, k in _kustomizations()
        for patch in k.get("patches", [])
        if "path" in patch
    }
    return [
        (p, d)
        for p, d in _manifests(folder)
        if d["kind"] != "Kustomization" and p.resolve() not in patches
    ]


def _kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        _missing("kubernetes-validate (dev extras)")
    return kubernetes_validate


def _validate_objects(objects: list[dict[str, Any]]) -> None:
    kv = _kubernetes_validate()
    version = kv.latest_version()
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus Operator's CRD: not in Kubernetes' own schemas
        kv.validate(obj, version, strict=True)


def test_manifests_are_valid_kubernetes_objects() -> None:
    objects = [d for _, d in _k8s_objects()]
    assert {"StatefulSet", "Service", "ConfigMap", "Job", "PodDisruptionBudget"} <= {
        d["kind"] for d in objects
    }
    _validate_objects(objects)


def _base(kind: str, name: str | None = None) -> dict[str, Any]:
    (obj,) = [
        d
        for _, d in _k8s_objects(K8S / "base")
        if d["kind"] == kind and name in (None, d["metadata"]["name"])
    ]
    return obj


def test_statefulset_gives_each_worker_its_own_state_volume() -> None:
    workers = _base("StatefulSet")
    config = _base("ConfigMap")["data"]
    pod = workers["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {"configMapRef": {"name": _base("ConfigMap")["metadata"]["name"]}} in container[
        "envFrom"
    ]
    (claim,) = workers["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == config["STREAMREC_STATE__DATA_DIR"]
    assert not pod.get("volumes"), "state must come from the claim template, not a shared volume"
    # Probes, scrape annotations and the Service all use the port the worker listens on.
    port = int(config["STREAMREC_SERVING__WEB_PORT"])
    assert config["STREAMREC_SERVING__WEB_BIND"] == "0.0.0.0"
    assert container["ports"] == [{"name": "web", "containerPort": port}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "web", probe
    assert container["resources"]["requests"]
    annotations = workers["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    service = _base("Service")
    assert service["spec"]["clusterIP"] == "None"  # headless: one stable name per worker
    assert workers["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= workers["spec"]["selector"]["matchLabels"].items()


def _env_names() -> set[str]:
    """Every STREAMREC_* variable the manifests set: ConfigMaps, containers, overlay patches."""
    names: set[str] = set()
    for _, obj in _k8s_objects():
        if obj["kind"] == "ConfigMap":
            names |= set(obj["data"])
        names |= {env["name"] for env in _find(obj, "env") for env in env if "name" in env}
    for _, kustomization in _kustomizations():
        for patch in kustomization.get("patches", []):
            for op in yaml.safe_load(patch.get("patch", "[]")):
                names.add(op["path"].rsplit("/", 1)[1])
    return {name for name in names if name.startswith("STREAMREC_")}


def _find(node: Any, key: str) -> Iterator[Any]:
    """Every value under ``key`` anywhere in a nested document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _find(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _find(v, key)


def test_manifest_variables_are_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    names = _env_names()
    assert "STREAMREC_STATE__DATA_DIR" in names and "STREAMREC_KAFKA__SASL_PASSWORD" in names
    assert not [n for n in names if not _setting_path(n)], "not settings"
    for name, value in _base("ConfigMap")["data"].items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # the base's values parse as settings
    assert settings.serving.web_bind == "0.0.0.0"
    assert str(settings.state.data_dir) == _base("ConfigMap")["data"]["STREAMREC_STATE__DATA_DIR"]


def test_overlays_render_to_valid_objects(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: overlays are not rendered (kubectl kustomize)")
    # The SASL overlay reads credentials from a file that is never committed.
    shutil.copytree(K8S, tmp_path / "k8s")
    (tmp_path / "k8s/overlays/sasl/kafka-credentials.env").write_text("username=u\npassword=p\n")
    overlays = sorted((tmp_path / "k8s/overlays").iterdir())
    assert {o.name for o in overlays} == {"model-gpu", "prometheus-operator", "sasl"}
    for overlay in overlays:
        result = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True)
        assert result.returncode == 0, result.stderr.decode()
        objects = list(yaml.safe_load_all(result.stdout))
        _validate_objects(objects)
        (workers,) = [o for o in objects if o["kind"] == "StatefulSet"]
        (container,) = workers["spec"]["template"]["spec"]["containers"]
        (config,) = [o for o in objects if o["kind"] == "ConfigMap"]
        assert {"configMapRef": {"name": config["metadata"]["name"]}} in container["envFrom"]
        if overlay.name == "model-gpu":
            assert config["data"]["STREAMREC_SERVING__MODE"] == "model"
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
            assert len(workers["spec"]["volumeClaimTemplates"]) == 1
