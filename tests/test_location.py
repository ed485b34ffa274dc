"""Location: the gpsd client against a real TCP server on loopback that speaks gpsd's JSON protocol."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from alprd.config import GpsdConfig, LocationConfig
from alprd.device.location import GpsdClient, Locator

VERSION = b'{"class":"VERSION","release":"3.22","rev":"3.22","proto_major":3,"proto_minor":14}\n'
DEVICES = b'{"class":"DEVICES","devices":[{"class":"DEVICE","path":"/dev/ttyACM0","driver":"u-blox"}]}\n'
WATCH = b'{"class":"WATCH","enable":true,"json":true,"nmea":false,"raw":0,"scaled":false}\n'


def tpv(
    lat: float, lon: float, track: float | None = 87.5, speed: float | None = 13.4, mode: int = 3
) -> bytes:
    body: dict[str, object] = {"class": "TPV", "device": "/dev/ttyACM0", "mode": mode,
                               "time": "2026-11-25T12:00:00.000Z", "lat": lat, "lon": lon, "alt": 34.2}
    if track is not None:
        body["track"] = track
    if speed is not None:
        body["speed"] = speed
    return json.dumps(body).encode() + b"\n"


SKY = (b'{"class":"SKY","device":"/dev/ttyACM0",'
       b'"satellites":[{"PRN":5,"el":31,"az":64,"ss":38,"used":true}]}\n')


class FakeGpsd:
    """gpsd as seen on TCP: VERSION on connect, reports only after `?WATCH={"enable":true,"json":true}`.

    `send(...)` queues raw bytes for the current client (partial lines included); `drop()` closes it.
    """

    def __init__(self, port: int = 0) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(4)
        self.port: int = self.server.getsockname()[1]
        self.commands: list[bytes] = []
        self.connections = 0
        self._out: queue.Queue[bytes | None] = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-gpsd", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                self._talk(conn)

    def _talk(self, conn: socket.socket) -> None:
        conn.sendall(VERSION)
        buf = b""
        conn.settimeout(5)
        while b"\n" not in buf:
            chunk = conn.recv(4096)
            if not chunk:
                return
            buf += chunk
        line = buf.split(b"\n", 1)[0]
        self.commands.append(line)
        if not line.startswith(b"?WATCH="):
            return
        conn.sendall(DEVICES + WATCH)
        while not self._closed.is_set():
            try:
                item = self._out.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is None:
                return
            conn.sendall(item)

    def send(self, *chunks: bytes) -> None:
        for c in chunks:
            self._out.put(c)

    def drop(self) -> None:
        self._out.put(None)

    def close(self) -> None:
        self._closed.set()
        self.server.close()
        self._thread.join(5)


@pytest.fixture
def gpsd() -> Iterator[FakeGpsd]:
    server = FakeGpsd()
    try:
        yield server
    finally:
        server.close()


def poll_until(client: GpsdClient, pred: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.poll()
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_tpv_gives_position_heading_and_speed(gpsd: FakeGpsd) -> None:
    client = GpsdClient(GpsdConfig(port=gpsd.port))
    try:
        client.poll()  # connects and asks for JSON reports
        gpsd.send(SKY, tpv(52.5200066, 13.4049540, track=271.25, speed=13.41))
        assert poll_until(client, lambda: client.fix is not None)
        assert json.loads(gpsd.commands[0].split(b"=", 1)[1]) == {"enable": True, "json": True}
        fix = client.fix
        assert fix is not None
        assert fix.as_dict() == {"lat": 52.5200066, "lon": 13.404954, "source": "gpsd",
                                 "heading": 271.2, "speed_mps": 13.41}
        # a newer report replaces the fix; one without a track (standing still) has no heading
        gpsd.send(tpv(52.53, 13.41, track=None, speed=0.0))
        assert poll_until(client, lambda: client.fix is not None and client.fix.lat == 52.53)
        assert "heading" not in client.fix.as_dict()  # type: ignore[union-attr]
    finally:
        client.close()


def test_partial_lines_garbage_and_no_fix_reports_are_handled(gpsd: FakeGpsd) -> None:
    client = GpsdClient(GpsdConfig(port=gpsd.port))
    try:
        client.poll()
        good = tpv(40.7128, -74.006, track=10.0)
        gpsd.send(b"not json at all\n", b'{"class":"TPV","mode":1}\n',  # no fix yet
                  tpv(1.0, 2.0, mode=1), b'["a list"]\n', b'{"class":"TPV","mode":3,"lat":"x","lon":1}\n',
                  b"{" + b"x" * 70000 + b"}\n")  # over the line cap
        gpsd.send(good[:17])
        time.sleep(0.3)
        client.poll()
        assert client.fix is None  # nothing usable so far, and half a report is not a report
        gpsd.send(good[17:])
        assert poll_until(client, lambda: client.fix is not None)
        assert (client.fix.lat, client.fix.lon, client.fix.heading) == (40.7128, -74.006, 10.0)  # type: ignore[union-attr]
    finally:
        client.close()


def test_gpsd_down_then_up_then_lost_is_reconnected_with_backoff() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = GpsdClient(GpsdConfig(port=port))
    t = time.monotonic()
    client.poll(t)  # nothing listens yet: refused, retry in 1 s
    assert client.errors == 1 and client.fix is None
    client.poll(t + 0.5)  # still backing off: no new attempt
    assert client.errors == 1
    client.poll(t + 1.1)  # retried, still refused: the delay doubled
    assert client.errors == 2
    server = FakeGpsd(port)
    try:
        client.poll(t + 2.0)  # within the doubled delay: no attempt
        assert server.connections == 0
        client.poll(t + 3.2)
        server.send(tpv(48.1, 11.6))
        assert poll_until(client, lambda: client.fix is not None)
        assert server.connections == 1
        server.drop()  # gpsd restarts: the connection closes
        deadline = time.monotonic() + 5
        while client._sock is not None and time.monotonic() < deadline:
            client.poll()
            time.sleep(0.02)
        assert client._sock is None and client.errors == 3
        client.poll(time.monotonic() + 1.5)  # after the (reset) 1 s delay it comes back
        server.send(tpv(48.2, 11.7))
        assert poll_until(client, lambda: client.fix is not None and client.fix.lat == 48.2)
        assert server.connections == 2
    finally:
        client.close()
        server.close()


def test_locator_prefers_a_fresh_fix_then_falls_back_to_static(gpsd: FakeGpsd) -> None:
    loc = Locator(LocationConfig(lat=52.0, lon=13.0, heading_deg=90.0,
                                 gpsd=GpsdConfig(port=gpsd.port, max_age_s=10.0)))
    try:
        t = time.monotonic()
        assert loc.current(t) == {"lat": 52.0, "lon": 13.0, "source": "static", "heading": 90.0}
        loc.poll(t)
        gpsd.send(tpv(52.1, 13.1, track=180.0, speed=8.0))
        assert loc.gpsd is not None
        assert poll_until(loc.gpsd, lambda: loc.gpsd.fix is not None)  # type: ignore[union-attr]
        mono = loc.gpsd.fix.mono  # type: ignore[union-attr]
        assert loc.current(mono + 9.0) == {"lat": 52.1, "lon": 13.1, "source": "gpsd", "heading": 180.0,
                                           "speed_mps": 8.0}
        assert loc.current(mono + 11.0)["source"] == "static"  # type: ignore[index]  # stale fix
    finally:
        loc.close()
    assert Locator(LocationConfig()).current() is None


def test_deeply_nested_lines_are_refused_and_counted_not_fatal(gpsd: FakeGpsd) -> None:
    # 5,000 `[` from a receiver (or whoever reaches gpsd's port) ended the daemon with RecursionError
    client = GpsdClient(GpsdConfig(port=gpsd.port))
    try:
        client.poll()
        gpsd.send(b"[" * 5000 + b"\n", b'{"a":' * 3000 + b"\n", b"\xff\xfe\n", b"\n")
        gpsd.send(tpv(48.1, 11.6))
        assert poll_until(client, lambda: client.fix is not None)
        assert client.refused == 3  # the empty line is no refusal
    finally:
        client.close()
