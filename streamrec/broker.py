"""The embedded Apache Kafka broker: real Kafka, resolved from Maven Central, run with ``java``.

One combined broker+controller in KRaft mode listens on loopback. It exists for the demo and the
test suite; production deployments point ``STREAMREC_KAFKA__BOOTSTRAP_SERVERS`` at their cluster.

Life cycle:
    fetch()  mvn copies kafka_2.13 (pinned in deploy/kafka/pom.xml) and its runtime jars into
             <cache>/kafka/<version>/libs; a marker file makes a second call free.
    start()  formats KRaft storage once per data dir, launches ``java kafka.Kafka`` in its own
             process group, records pid and ports in <data_dir>/broker.json, and returns when the
             broker answers a metadata request (not merely when the port opens).
    stop()   SIGTERM for a clean shutdown, SIGKILL after the timeout.

Every failure raises BrokerError with what to do, and the tail of the broker log when it died.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path

from streamrec.broker_config import SaslSslListener, server_properties
from streamrec.errors import BrokerError

REPO_ROOT = Path(__file__).resolve().parents[1]
POM_PATH = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J_PATH = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"
STATE_FILE = "broker.json"
LOG_FILE = "broker.log"


@dataclass(frozen=True)
class BrokerInfo:
    """What a running embedded broker recorded about itself in its data dir."""

    pid: int
    port: int
    controller_port: int
    version: str
    data_dir: str

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


def pinned_version() -> str:
    """The Kafka version pinned in deploy/kafka/pom.xml."""
    try:
        match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM_PATH.read_text())
    except OSError:
        match = None
    if match is None:
        raise BrokerError(f"no <kafka.version> in {POM_PATH}; run from a streamrec checkout")
    return match.group(1)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BrokerError(f"`{name}` is not on PATH; {hint}")
    return path


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no broker log was written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class EmbeddedKafka:
    """Fetch, start, probe and stop one local Kafka broker.

    Args:
        version: Apache Kafka version (org.apache.kafka:kafka_2.13); None: the pinned one.
        cache_dir: streamrec cache; jars go to ``cache_dir/kafka/<version>/libs``.
        data_dir: KRaft metadata and logs of this broker; one broker per data dir.
        port: loopback port of the PLAINTEXT listener (0 picks a free one).
        start_timeout_s: how long start() waits for the broker to answer metadata requests.
        heap_mb: JVM heap; 512 MiB is plenty for tests and the demo on a 2-core machine.
        secure: an extra SASL_SSL listener with SCRAM users (streamrec/broker_config.py).
    """

    def __init__(
        self,
        version: str | None,
        cache_dir: Path,
        data_dir: Path,
        port: int = 9092,
        start_timeout_s: float = 60.0,
        heap_mb: int = 512,
        secure: SaslSslListener | None = None,
    ) -> None:
        self.version = version or pinned_version()
        self.libs_dir = cache_dir / "kafka" / self.version / "libs"
        self.data_dir = data_dir
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self.heap_mb = heap_mb
        self.secure = secure

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    # -- fetch ---------------------------------------------------------------------------------

    def fetch(self) -> Path:
        """Resolve the pinned Kafka jars into the cache; returns the libs folder. Idempotent."""
        marker = self.libs_dir / ".complete"
        if marker.exists():
            return self.libs_dir
        mvn = _require_tool("mvn", "install Maven (Debian: apt-get install maven) to fetch Kafka")
        if not POM_PATH.exists():
            raise BrokerError(
                f"Kafka coordinates {POM_PATH} are missing; run from a streamrec checkout"
            )
        staging = self.libs_dir.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM_PATH),
            "dependency:copy-dependencies",
            f"-Dkafka.version={self.version}",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(
                f"mvn could not resolve Apache Kafka {self.version} from Maven Central "
                f"(exit {result.returncode}); check the version and network:\n"
                f"{(result.stdout + result.stderr)[-3000:]}"
            )
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        staging.rename(self.libs_dir)
        marker.touch()
        return self.libs_dir

    # -- start / stop --------------------------------------------------------------------------

    def start(self) -> BrokerInfo:
        """Start the broker (fetching jars first if needed) and wait until it serves metadata."""
        running = self.info()
        if running is not None and _alive(running.pid):
            raise BrokerError(
                f"a broker (pid {running.pid}) already runs on port {running.port} with data dir "
                f"{self.data_dir}; stop it first (streamrec kafka stop)"
            )
        java = _require_tool("java", "install a Java 17+ runtime (Debian: openjdk-17-jre-headless)")
        libs = self.fetch()
        for port in (self.port, *([self.secure.port] if self.secure else [])):
            if port_in_use(port):
                raise BrokerError(
                    f"port {port} is already taken on 127.0.0.1; pick another with --port "
                    "or STREAMREC_BROKER__PORT"
                )
        controller_port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config(controller_port)
        self._format_storage(java, libs, config)
        log = self.log_path.open("ab")
        proc = subprocess.Popen(
            [*self._java_cmd(java, libs), "kafka.Kafka", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI that started it; stop() kills the group
        )
        log.close()
        info = BrokerInfo(proc.pid, self.port, controller_port, self.version, str(self.data_dir))
        (self.data_dir / STATE_FILE).write_text(json.dumps(asdict(info)))
        self._wait_ready(proc)
        return info

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker recorded in the data dir; returns False when none was running."""
        info = self.info()
        if info is None or not _alive(info.pid):
            (self.data_dir / STATE_FILE).unlink(missing_ok=True)
            return False
        _signal_group(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(info.pid):
            time.sleep(0.2)
        if _alive(info.pid):
            _signal_group(info.pid, signal.SIGKILL)
            while _alive(info.pid):
                time.sleep(0.1)
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL the broker (a crash: no controlled shutdown, logs recovered at the next
        start); returns False when none was running."""
        info = self.info()
        if info is None or not _alive(info.pid):
            return False
        _signal_group(info.pid, signal.SIGKILL)
        while _alive(info.pid):
            time.sleep(0.1)
        (self.data_dir / STATE_FILE).unlink(missing_ok=True)
        return True

    def info(self) -> BrokerInfo | None:
        """The broker recorded in the data dir, running or not."""
        path = self.data_dir / STATE_FILE
        if not path.exists():
            return None
        return BrokerInfo(**json.loads(path.read_text()))

    def status(self) -> dict[str, object]:
        """Figures for `streamrec kafka status`."""
        info = self.info()
        alive = info is not None and _alive(info.pid)
        answering = alive and info is not None and _metadata_ok(info.bootstrap_servers, 2.0)
        return {
            "running": alive,
            "answering_metadata": answering,
            "bootstrap_servers": info.bootstrap_servers if info else None,
            "pid": info.pid if info else None,
            "version": info.version if info else self.version,
            "data_dir": str(self.data_dir),
            "jars_cached": (self.libs_dir / ".complete").exists(),
        }

    # -- internals -----------------------------------------------------------------------------

    def _java_cmd(self, java: str, libs: Path) -> list[str]:
        return [
            java,
            f"-Xmx{self.heap_mb}m",
            f"-Xms{min(self.heap_mb, 256)}m",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={LOG4J_PATH}",
            "-cp",
            str(libs / "*"),
        ]

    def _write_config(self, controller_port: int) -> Path:
        props = server_properties(self.port, controller_port, self.data_dir, self.secure)
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _format_storage(self, java: str, libs: Path, config: Path) -> None:
        if (self.data_dir / "kraft-logs" / "meta.properties").exists():
            return
        cmd = [
            *self._java_cmd(java, libs),
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={new_cluster_id()}",
            "-c",
            str(config),
            "--ignore-formatted",
            *(self.secure.format_args() if self.secure else []),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(
                f"formatting KRaft storage in {self.data_dir} failed (exit {result.returncode}); "
                f"delete the folder if it holds another cluster:\n{result.stdout}{result.stderr}"
            )

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                (self.data_dir / STATE_FILE).unlink(missing_ok=True)
                raise BrokerError(
                    f"the Kafka broker exited with code {proc.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            if _metadata_ok(self.bootstrap_servers, 2.0):
                return
            time.sleep(0.3)
        self.stop(timeout_s=5)
        raise BrokerError(
            f"the Kafka broker did not answer metadata requests in {self.start_timeout_s:.0f} s; "
            f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return _not_zombie(pid)
    return done == 0


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


# aiokafka logs every refused connection at ERROR; while a broker starts, refusal is expected.
# Records logged inside the probe (this context variable is set there) are dropped, and only
# those: the filter stays on aiokafka's loggers, and everyone else's records pass.
_probing: ContextVar[bool] = ContextVar("streamrec_broker_probe", default=False)
_PROBE_LOGGERS = ("aiokafka", "aiokafka.conn", "aiokafka.client")


class _QuietProbe(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _probing.get()


def _metadata_ok(bootstrap: str, timeout_s: float) -> bool:
    """True when the broker answers a metadata request and lists at least one live broker."""
    from aiokafka.client import AIOKafkaClient

    for name in _PROBE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietProbe) for f in logger.filters):
            logger.addFilter(_QuietProbe())

    async def probe() -> bool:
        _probing.set(True)  # inside asyncio.run's own context: the caller's stays unset
        client = AIOKafkaClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
        )
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
            return bool(client.cluster.brokers())
        except Exception:  # any failure means "not ready yet"; the caller retries
            return False
        finally:
            await client.close()

    return asyncio.run(probe())


def new_cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64, never starting with ``-``.

    Kafka's own ``Uuid.randomUuid`` redraws such ids too: command-line parsers take a leading
    ``-`` for an option (a 1-in-64 chance that made a broker start fail now and then).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
