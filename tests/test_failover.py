"""Broker failover (issue 22): `mqtt.hosts`, against real mosquittos on random loopback ports.

Two mosquittos are not a cluster, so the back office here listens on both; the fleet benchmark
(`bench/fleet.py`, tests/test_fleet.py) does the same on a real RabbitMQ cluster.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MOSQUITTO, Mosquitto, Subscriber
from pydantic import ValidationError
from test_publish import ListOutbox, wait

from alprd.config import MqttConfig
from alprd.device.publish import PahoPublisher


def hosts_cfg(*ports: int, **kw: object) -> MqttConfig:
    return MqttConfig(hosts=tuple(f"127.0.0.1:{p}" for p in ports), keepalive_s=5, reconnect_min_s=1,
                      reconnect_max_s=2, **kw)  # type: ignore[arg-type]


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port  # closed again: connecting there is refused


@pytest.fixture
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mosquitto, Mosquitto]]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto; .ci/run does it)")
    a, b = Mosquitto(tmp_path_factory.mktemp("a")), Mosquitto(tmp_path_factory.mktemp("b"))
    a.start()
    b.start()
    try:
        yield a, b
    finally:
        a.kill()
        b.kill()


def hit_ids(*subs: Subscriber) -> list[str]:
    return [json.loads(p)["hit_id"] for s in subs for p in s.on("/hit")]


def test_hosts_config_one_element_case_and_refusals() -> None:
    assert MqttConfig().endpoints() == [("localhost", 1883)]
    assert MqttConfig(host="b.example", port=8883).endpoints() == [("b.example", 8883)]
    m = MqttConfig(hosts=("a.example:1883", "10.0.0.2:1884", "[fd00::3]:8883"))
    assert m.endpoints() == [("a.example", 1883), ("10.0.0.2", 1884), ("fd00::3", 8883)]
    for bad in (["a.example"], ["a.example:0"], ["a.example:70000"], ["fd00::3:8883"], [":1883"]):
        with pytest.raises(ValidationError, match=r"host:port|brackets"):
            MqttConfig(hosts=tuple(bad))
    with pytest.raises(ValidationError, match="not both"):
        MqttConfig(host="a.example", hosts=("b.example:1883",))


def test_connects_to_the_first_broker_that_answers(two: tuple[Mosquitto, Mosquitto]) -> None:
    a, _ = two
    pub = PahoPublisher(hosts_cfg(dead_port(), a.port), "devf1", session=1)
    sub = Subscriber(a, "alprd/devf1/status")
    pub.start()
    try:
        assert wait(lambda: pub.connected, 15)
        assert pub.brokers.current == f"127.0.0.1:{a.port}"
        assert sub.wait_for(lambda s: [m["state"] for m in s.json_on("/status")][-1:] == ["online"])
    finally:
        pub.stop()
        sub.close()


def test_broker_killed_mid_run_device_moves_on_no_hit_lost_status_and_will_on_the_new_node(
    two: tuple[Mosquitto, Mosquitto],
) -> None:
    """In app_ack mode, as a fleet runs: a broker may lose what it had acknowledged when it is killed
    (mosquitto saves once a second), so the outbox lets a hit go only on the back office's word."""
    a, b = two
    outbox = ListOutbox()
    sub_a, sub_b = Subscriber(a, "alprd/devf2/#", "bo-a"), Subscriber(b, "alprd/devf2/#", "bo-b")
    pub = PahoPublisher(hosts_cfg(a.port, b.port, app_ack=True), "devf2", session=4)

    def back_office_acks() -> bool:
        pub.pump(outbox)
        for hit_id in set(hit_ids(sub_a, sub_b)):
            pub.app_acked(hit_id, outbox)
        return not outbox.rows

    pub.start()
    n = 0
    try:
        assert wait(lambda: pub.connected)
        for _ in range(30):
            outbox.put("hit", f"h{n}", {"hit_id": f"h{n}", "n": n})
            n += 1
            pub.pump(outbox)
        a.kill()  # mid-flight: some have no PUBACK yet, some no ack from the back office
        for _ in range(30):
            outbox.put("hit", f"h{n}", {"hit_id": f"h{n}", "n": n})
            n += 1
            pub.pump(outbox)
        assert wait(back_office_acks, 20), sorted(r.key for r in outbox.rows.values())
        assert pub.brokers.current == f"127.0.0.1:{b.port}" and pub.brokers.switches == 1
        assert pub.last_outage_s is not None and pub.last_outage_s < 10
        assert set(hit_ids(sub_a, sub_b)) == {f"h{i}" for i in range(n)}
        # a duplicate is the same message: same hit_id, same bytes
        assert len({p for s in (sub_a, sub_b) for p in s.on("/hit")}) == n
        # the retained status is on the node the device is on now
        late = Subscriber(b, "alprd/devf2/status", "late")
        try:
            assert late.wait_for(lambda s: [m["state"] for m in s.json_on("/status")] == ["online"])
        finally:
            late.close()
        # and that node holds its will: the link dies without DISCONNECT
        sock = pub.client.socket()
        assert sock is not None
        sock.close()
        assert sub_b.wait_for(lambda s: "offline" in [m["state"] for m in s.json_on("/status")], 15)
        assert sub_b.json_on("/status")[-1]["session"] == 4
    finally:
        pub.stop()
        sub_a.close()
        sub_b.close()


def test_app_ack_hits_go_out_again_at_once_when_the_new_broker_has_no_session(
    two: tuple[Mosquitto, Mosquitto],
) -> None:
    """The back office's acks for hits delivered to the dead node would have waited in that node's
    session; on a node without it they never come, so the hits are resent on connect, not after
    resend_after_s (30 s here)."""
    a, b = two
    outbox = ListOutbox()
    pub = PahoPublisher(hosts_cfg(a.port, b.port, app_ack=True, resend_after_s=30), "devf3", session=1)
    sub_b = Subscriber(b, "alprd/devf3/hit", "bo-b")
    pub.start()
    try:
        assert wait(lambda: pub.connected)
        outbox.put("hit", "k1", {"hit_id": "k1"})
        assert wait(lambda: (pub.pump(outbox), pub.acked == 0 and not pub.inflight)[1])
        assert len(outbox.rows) == 1  # the broker has it, the back office has not acked it
        a.kill()
        assert wait(lambda: (pub.pump(outbox), sub_b.on("/hit"))[1], 12), "not resent on the new node"
        assert json.loads(sub_b.on("/hit")[0])["hit_id"] == "k1"
        assert pub.app_acked("k1", outbox) and not outbox.rows
    finally:
        pub.stop()
        sub_b.close()


class SilentBroker:
    """Answers CONNECT and PINGREQ, never SUBSCRIBE: a broker that took the connection but cannot
    serve the session (as a RabbitMQ node does whose session queue lives on a dead node)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.connects = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connects += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn:
            f = conn.makefile("rb")
            while head := f.read(1):
                length, mult = 0, 1
                while True:
                    byte = f.read(1)[0]
                    length += (byte & 0x7F) * mult
                    mult *= 128
                    if not byte & 0x80:
                        break
                f.read(length)
                if head[0] >> 4 == 1:  # CONNECT -> CONNACK accepted, no session
                    conn.sendall(b"\x20\x02\x00\x00")
                elif head[0] >> 4 == 12:  # PINGREQ -> PINGRESP
                    conn.sendall(b"\xd0\x00")

    def close(self) -> None:
        self.server.close()


def test_a_subscription_left_unanswered_makes_the_device_move_on(
    two: tuple[Mosquitto, Mosquitto], tmp_path: Path
) -> None:
    from alprd.device.publish import Inbound

    a, _ = two
    silent = SilentBroker()
    pub = PahoPublisher(hosts_cfg(silent.port, a.port, protocol="3.1.1"), "devf4", session=1,
                        inbound={"ack": Inbound(1024, "the ack limit")})
    sender = Subscriber(a, "nothing/#", "sender")
    pub.start()
    try:
        assert wait(lambda: pub.connected and silent.connects == 1)
        assert pub.brokers.current == f"127.0.0.1:{silent.port}"
        assert wait(lambda: (pub.pump(ListOutbox()), pub.brokers.current.endswith(f":{a.port}")
                             and pub.connected)[1], 20)
        assert wait(lambda: (sender.client.publish("alprd/devf4/ack", b"x", qos=1), pub.commands())[1], 10)
    finally:
        pub.stop()
        sender.close()
        silent.close()
