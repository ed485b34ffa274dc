"""Shared fixtures. Real data lives in ../shared/data (never copied into the repo)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "plates"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real plate data not found at {DATA}")
    return DATA


# --- a real MQTT broker (mosquitto) on a random loopback port ----------------------------------


class Mosquitto:
    """A mosquitto process with persistence on, so a SIGKILL + restart keeps retained messages."""

    def __init__(self, workdir: Path) -> None:
        import socket

        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self.host = "127.0.0.1"
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "autosave_interval 1\n"
            "autosave_on_changes true\n"
            "max_queued_messages 100000\n"
            f"log_dest file {self.dir}/mosquitto.log\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import socket
        import time

        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.dir / "mosquitto.log").read_text(errors="replace")
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {log[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not open its port within 10 s")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no final persistence save."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()


# Debian puts it in /usr/sbin, which is not on every PATH
MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto; .ci/run does it)")
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


class Subscriber:
    """A back-office MQTT client that records every message under a topic filter."""

    def __init__(self, broker: Mosquitto, topic: str = "#", client_id: str = "backoffice") -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.topic = topic
        self.messages: list[tuple[str, bytes, bool]] = []
        self.subscriptions = 0  # SUBACKs seen: one per (re)connection
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.reconnect_delay_set(1, 1)
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client: object, userdata: object, flags: object, rc: object, props: object) -> None:
        self.client.subscribe(self.topic, qos=1)

    def _on_subscribe(
        self, client: object, userdata: object, mid: object, codes: object, props: object
    ) -> None:
        with self._lock:
            self.subscriptions += 1

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))  # type: ignore[attr-defined]

    def on(self, suffix: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t.endswith(suffix)]

    def json_on(self, suffix: str) -> list[dict[str, object]]:
        import json

        return [json.loads(p) for p in self.on(suffix)]

    def wait_for(self, predicate: Callable[[Subscriber], bool], timeout: float = 10.0) -> bool:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
