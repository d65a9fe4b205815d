"""What the embedded broker is configured with: its ``server.properties`` and, optionally, a
SASL_SSL listener with SCRAM users (streamrec/broker.py starts and stops it).

The PLAINTEXT listener on loopback is always there: the broker talks to itself through it
(inter-broker listener) and streamrec's readiness probe uses it. A ``SaslSslListener`` adds a
second, secured port for clients: TLS with the broker's key and certificate from a PKCS#12
keystore, and SCRAM-SHA-512 (or -256) authentication against users written into the cluster
metadata when the storage is formatted (KRaft has no ZooKeeper to hold them), so clients
connect with credentials from the first second and are refused without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SaslSslListener:
    """A client listener that needs TLS and SCRAM credentials.

    Args:
        port: loopback port of the listener.
        keystore: PKCS#12 file with the broker's private key and a certificate valid for
            127.0.0.1 (clients verify it against their ``ssl_cafile``).
        keystore_password: password of the keystore and of the key in it.
        users: SCRAM user name -> password, created at format time (a data dir formatted
            without them keeps none: use a fresh one).
        mechanism: SCRAM-SHA-512 or SCRAM-SHA-256.
    """

    port: int
    keystore: Path
    keystore_password: str = field(repr=False)
    users: Mapping[str, str] = field(repr=False)
    mechanism: str = "SCRAM-SHA-512"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def properties(self) -> dict[str, str]:
        """Broker properties of the listener (added to the PLAINTEXT ones)."""
        prefix = f"listener.name.sasl_ssl.{self.mechanism.lower()}"
        return {
            "sasl.enabled.mechanisms": self.mechanism,
            f"{prefix}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": self.keystore_password,
            "ssl.key.password": self.keystore_password,
            "ssl.client.auth": "none",
        }

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments that create the SCRAM users."""
        args: list[str] = []
        for user, password in self.users.items():
            args += ["--add-scram", f"{self.mechanism}=[name={user},password={password}]"]
        return args


def server_properties(
    port: int, controller_port: int, data_dir: Path, secure: SaslSslListener | None
) -> dict[str, str]:
    """``server.properties`` of a one-node KRaft broker+controller on loopback."""
    listeners = [f"PLAINTEXT://127.0.0.1:{port}", f"CONTROLLER://127.0.0.1:{controller_port}"]
    advertised = [f"PLAINTEXT://127.0.0.1:{port}"]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    if secure is not None:
        listeners.append(f"SASL_SSL://127.0.0.1:{secure.port}")
        advertised.append(f"SASL_SSL://127.0.0.1:{secure.port}")
        protocols.append("SASL_SSL:SASL_SSL")
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": ",".join(protocols),
        "log.dirs": str(data_dir / "kraft-logs"),
        "num.partitions": "4",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # A lone broker has nobody to wait for; the default 3 s delay only slows every test.
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.retention.hours": "-1",
    }
    if secure is not None:
        props.update(secure.properties())
    return props
