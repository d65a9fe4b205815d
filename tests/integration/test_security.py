"""Kafka security exercised, not only configurable: a private broker with a SASL_SSL listener
(TLS with a certificate made here by Java's keytool, the JDK the broker runs on, and
SCRAM-SHA-512 users), and every streamrec client on it: ``streamrec topics create``,
``streamrec produce``, the worker (faust, its own consumers and the broker watch). Each
connects with the right credentials and is refused with a wrong password or without SASL; the
password and the worker's web token appear in no log and no page; ``serving.web_token`` keeps
/stats and /recommendations closed to requests without it while /metrics stays open.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamrec.broker import EmbeddedKafka, free_port
from streamrec.broker_config import SaslSslListener
from streamrec.settings import default_cache_dir
from streamrec.stream.testing import WorkerProcess, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.integration]

USER, PASSWORD = "streamrec-app", "pw-7Hq2-never-logged"
TOKEN = "tok-Zx81-never-logged"
SECRETS = (PASSWORD, TOKEN)


def _keytool(*args: str) -> None:
    keytool = shutil.which("keytool")
    if keytool is None:
        pytest.fail("keytool is missing: it ships with the Java runtime the broker needs")
    subprocess.run([keytool, *args], check=True, capture_output=True)


def make_certificates(folder: Path, password: str) -> tuple[Path, Path]:
    """A test CA and a broker keystore signed by it for 127.0.0.1; returns (keystore, CA PEM)."""
    ca, ca_pem = folder / "ca.p12", folder / "ca.pem"
    keystore, csr, cert = folder / "broker.p12", folder / "broker.csr", folder / "broker.pem"
    common = ["-storetype", "PKCS12", "-storepass", password, "-keypass", password]
    _keytool(
        "-genkeypair",
        "-alias",
        "ca",
        "-keyalg",
        "RSA",
        "-keysize",
        "2048",
        "-dname",
        "CN=streamrec test CA",
        "-ext",
        "bc:c",
        "-validity",
        "2",
        "-keystore",
        str(ca),
        *common,
    )
    _keytool(
        "-exportcert",
        "-rfc",
        "-alias",
        "ca",
        "-keystore",
        str(ca),
        "-file",
        str(ca_pem),
        "-storepass",
        password,
    )
    _keytool(
        "-genkeypair",
        "-alias",
        "broker",
        "-keyalg",
        "RSA",
        "-keysize",
        "2048",
        "-dname",
        "CN=localhost",
        "-validity",
        "2",
        "-keystore",
        str(keystore),
        *common,
    )
    _keytool(
        "-certreq",
        "-alias",
        "broker",
        "-keystore",
        str(keystore),
        "-file",
        str(csr),
        "-storepass",
        password,
    )
    _keytool(
        "-gencert",
        "-rfc",
        "-alias",
        "ca",
        "-keystore",
        str(ca),
        "-storepass",
        password,
        "-infile",
        str(csr),
        "-outfile",
        str(cert),
        "-validity",
        "2",
        "-ext",
        "SAN=ip:127.0.0.1,dns:localhost",
    )
    _keytool(
        "-importcert",
        "-noprompt",
        "-alias",
        "ca",
        "-file",
        str(ca_pem),
        "-keystore",
        str(keystore),
        "-storepass",
        password,
    )
    _keytool(
        "-importcert",
        "-alias",
        "broker",
        "-file",
        str(cert),
        "-keystore",
        str(keystore),
        "-storepass",
        password,
    )
    return keystore, ca_pem


@dataclass
class SecureBroker:
    broker: EmbeddedKafka
    listener: SaslSslListener
    cafile: Path

    def env(self, password: str | None = PASSWORD) -> dict[str, str]:
        """STREAMREC_KAFKA__* for a client of the secure listener (no SASL when None)."""
        env = {
            "STREAMREC_KAFKA__BOOTSTRAP_SERVERS": self.listener.bootstrap_servers,
            "STREAMREC_KAFKA__SSL_CAFILE": str(self.cafile),
            "STREAMREC_KAFKA__TOPICS__PREFIX": "secure.",
            "STREAMREC_KAFKA__SECURITY_PROTOCOL": "SSL" if password is None else "SASL_SSL",
        }
        if password is not None:
            env.update(
                STREAMREC_KAFKA__SASL_MECHANISM="SCRAM-SHA-512",
                STREAMREC_KAFKA__SASL_USERNAME=USER,
                STREAMREC_KAFKA__SASL_PASSWORD=password,
            )
        return env


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    folder = tmp_path_factory.mktemp("secure")
    keystore, cafile = make_certificates(folder, "keystore-pw")
    listener = SaslSslListener(free_port(), keystore, "keystore-pw", {USER: PASSWORD})
    broker = EmbeddedKafka(None, default_cache_dir(), folder / "broker", port=0, secure=listener)
    broker.start()
    try:
        yield SecureBroker(broker, listener, cafile)
    finally:
        broker.stop()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamrec", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def _http(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _stats(worker: WorkerProcess) -> dict[str, Any]:
    try:
        status, body = _http(worker.web_port, "/stats", TOKEN)
    except OSError:
        return {}
    return dict(json.loads(body)) if status == 200 else {}


def test_clients_connect_with_credentials_and_are_refused_without(
    secure: SecureBroker, tmp_path: Path
) -> None:
    outputs: list[str] = []
    wrong = _cli(secure.env("not-the-password"), "topics", "create", "--json")
    no_sasl = _cli(secure.env(None), "topics", "create", "--json")
    outputs += [wrong.stdout + wrong.stderr, no_sasl.stdout + no_sasl.stderr]
    assert wrong.returncode != 0 and "SaslAuthenticationFailed" in outputs[0]
    assert no_sasl.returncode != 0  # TLS without SASL: the broker closes the connection
    created = _cli(secure.env(), "topics", "create", "--json")
    outputs.append(created.stdout + created.stderr)
    assert created.returncode == 0, created.stderr[-2000:]

    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(
            json.dumps(
                {
                    "event_id": f"e{n}",
                    "user_id": f"u{n % 7}",
                    "item_id": f"i{n % 11}",
                    "type": "click",
                    "ts": 1_700_000_000_000 + n,
                }
            )
            + "\n"
            for n in range(200)
        )
    )
    refused = _cli(
        secure.env("not-the-password"), "produce", str(events), "--json", "--max-outage-s", "10"
    )
    outputs.append(refused.stdout + refused.stderr)
    assert refused.returncode != 0 and "SaslAuthenticationFailed" in outputs[-1]

    env = {**secure.env(), "STREAMREC_SERVING__WEB_TOKEN": TOKEN}
    kafka_env = {k: v for k, v in env.items() if k.startswith("STREAMREC_KAFKA__")}
    worker = WorkerProcess(_settings_stub(), tmp_path / "w", free_port(), env)
    worker.env.update(kafka_env)  # the secure listener, not the stub's address
    worker.start()
    try:
        wait_until(lambda: _stats(worker).get("partitions"), 120, "the worker on SASL_SSL")
        produced = _cli(secure.env(), "produce", str(events), "--json")
        outputs.append(produced.stdout + produced.stderr)
        assert produced.returncode == 0, produced.stderr[-2000:]
        wait_until(lambda: _stats(worker).get("events_accepted") == 200, 120, "200 events")
        port = worker.web_port
        assert _http(port, "/stats")[0] == 401
        assert _http(port, "/stats", "wrong")[0] == 401
        assert _http(port, "/recommendations/u1")[0] == 401
        status, slate = _http(port, "/recommendations/u1", TOKEN)
        assert status == 200 and json.loads(slate)["user_id"] == "u1"
        status, metrics = _http(port, "/metrics")
        assert status == 200 and b"streamrec_broker_up 1.0" in metrics
        pages = [json.dumps(_stats(worker)).encode(), slate, metrics]
    finally:
        worker.stop()
    logs = worker.log_path.read_text(errors="replace")
    for secret in SECRETS:
        assert secret not in logs, f"a secret is in the worker log: {secret[:4]}..."
        assert not [o for o in outputs if secret in o], "a secret is in a command's output"
        assert not [p for p in pages if secret.encode() in p], "a secret is in a page"


def test_a_plaintext_client_cannot_use_the_secure_listener(secure: SecureBroker) -> None:
    async def connect() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=secure.listener.bootstrap_servers, request_timeout_ms=5_000
        )
        try:
            await asyncio.wait_for(producer.start(), 30)
        finally:
            await producer.stop()

    with pytest.raises((KafkaError, TimeoutError)):
        asyncio.run(connect())


def _settings_stub() -> Any:
    """What WorkerProcess reads of KafkaSettings before the secure env overrides it."""
    from streamrec.settings import KafkaSettings, TopicSettings

    return KafkaSettings(bootstrap_servers="127.0.0.1:9", topics=TopicSettings(prefix="secure."))
