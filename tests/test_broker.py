"""The broker side (issue 24): the shipped mosquitto config with generated certificates, per-device
passwords and its ACL; TLS failures named in the log; a broker's size limit; reconnect cycles.

Certificates are made here with `cryptography` (a CA, a server certificate for 127.0.0.1, a client
certificate); mosquitto runs the shipped config/mosquitto/alprd.conf with only its listener, paths
and (for mutual TLS) `require_certificate` changed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import paho.mqtt.client as mqtt
import pytest
from conftest import MOSQUITTO, Mosquitto, Subscriber
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from test_publish import ListOutbox, cfg, wait

from alprd.config import MqttConfig
from alprd.device.publish import PahoPublisher
from alprd.errors import PublishError
from alprd.payloads import Body

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "config" / "mosquitto"


# --- certificates ------------------------------------------------------------------------------------


def _pem_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)


def _cert(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey, ca: bool = False, ip: str | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer.subject if issuer is not None else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip is not None:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(d: Path, name: str = "ca") -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files under `d`."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(f"alprd test {name}", ca_key, None, ca_key, ca=True)
    out = {"ca": d / f"{name}.crt"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role, ip in (("server", "127.0.0.1"), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        crt = _cert(f"{role}-{name}", key, ca, ca_key, ip=ip)
        out[f"{role}_crt"] = d / f"{role}-{name}.crt"
        out[f"{role}_key"] = d / f"{role}-{name}.key"
        out[f"{role}_crt"].write_bytes(crt.public_bytes(serialization.Encoding.PEM))
        _pem_key(key, out[f"{role}_key"])
    return out


# --- the shipped broker config ---------------------------------------------------------------------


USERS = {"backoffice": "bo-secret", "dev1": "dev1-secret", "dev2": "dev2-secret"}


class ShippedBroker(Mosquitto):
    """mosquitto running config/mosquitto/alprd.conf and alprd.acl as shipped, on a random port."""

    def __init__(self, workdir: Path, mutual: bool = False) -> None:
        super().__init__(workdir)
        self.pki = make_pki(workdir / "pki")
        passwd = workdir / "alprd.passwd"
        for i, (user, password) in enumerate(USERS.items()):
            create = ["-c"] if i == 0 else []
            subprocess.run(["mosquitto_passwd", "-b", *create, str(passwd), user, password],
                           check=True, capture_output=True)
        text = (SHIPPED / "alprd.conf").read_text()
        for old, new in (("listener 8883", f"listener {self.port} 127.0.0.1"),
                         ("/etc/mosquitto/certs/ca.crt", str(self.pki["ca"])),
                         ("/etc/mosquitto/certs/server.crt", str(self.pki["server_crt"])),
                         ("/etc/mosquitto/certs/server.key", str(self.pki["server_key"])),
                         ("/etc/mosquitto/alprd.passwd", str(passwd)),
                         ("/etc/mosquitto/alprd.acl", str(SHIPPED / "alprd.acl")),
                         ("/var/lib/mosquitto/", f"{workdir}/")):
            assert old in text, old
            text = text.replace(old, new)
        if mutual:
            text = text.replace("#require_certificate true", "require_certificate true")
        # as root (CI) mosquitto drops to its own user, which cannot read pytest's 0700 folders
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(text + f"log_dest file {workdir}/mosquitto.log\n{user}")


@pytest.fixture
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShippedBroker]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    broker = ShippedBroker(tmp_path_factory.mktemp("shipped"))
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def client(broker: ShippedBroker, user: str | None, ca: Path | None = None,
           cert: tuple[Path, Path] | None = None, timeout: float = 10.0,
           ) -> tuple[mqtt.Client, list[tuple[str, bytes]], Any]:
    """A connected paho client (or the reason it was refused) and the list its messages land in."""
    got: list[tuple[str, bytes]] = []
    result: dict[str, Any] = {}
    done = threading.Event()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                    client_id=f"t-{user}-{time.monotonic_ns()}", protocol=mqtt.MQTTv5)
    if user is not None:
        c.username_pw_set(user, USERS[user])
    c.tls_set(ca_certs=str(ca or broker.pki["ca"]), certfile=str(cert[0]) if cert else None,
              keyfile=str(cert[1]) if cert else None)

    def on_connect(cl: Any, ud: Any, flags: Any, rc: Any, props: Any) -> None:
        result["rc"] = rc
        done.set()

    c.on_connect = on_connect
    c.on_message = lambda cl, ud, msg: got.append((msg.topic, bytes(msg.payload)))
    try:
        c.connect(broker.host, broker.port, keepalive=10)
    except (OSError, ssl.SSLError) as e:
        return c, got, e
    c.loop_start()
    done.wait(timeout)
    return c, got, result.get("rc")


def close(c: mqtt.Client) -> None:
    c.disconnect()
    c.loop_stop()


def test_shipped_acl_keeps_each_device_to_its_own_topics(shipped: ShippedBroker) -> None:
    office, seen, rc = client(shipped, "backoffice")
    assert rc is not None and not rc.is_failure
    dev1, dev1_got, rc1 = client(shipped, "dev1")
    assert rc1 is not None and not rc1.is_failure
    try:
        office.subscribe("alprd/#", qos=1)
        dev1.subscribe("alprd/dev1/hotlist/set", qos=1)
        dev1.subscribe("alprd/dev2/hotlist/set", qos=1)  # another device's commands: not delivered
        dev1.subscribe("alprd/dev2/hit", qos=1)  # another device's hits: not delivered
        time.sleep(0.5)
        dev1.publish("alprd/dev1/hit", b"own", qos=1).wait_for_publish(5)
        for topic in ("alprd/dev2/hit", "alprd/dev2/ack", "alprd/dev1/ack", "alprd/dev2/hotlist/set",
                      "elsewhere/x"):
            dev1.publish(topic, b"forged", qos=1).wait_for_publish(5)
        office.publish("alprd/dev1/hotlist/set", b"for dev1", qos=1).wait_for_publish(5)
        office.publish("alprd/dev2/hotlist/set", b"for dev2", qos=1).wait_for_publish(5)
        office.publish("alprd/dev2/hit", b"not the office's to publish", qos=1).wait_for_publish(5)
        assert wait(lambda: ("alprd/dev1/hotlist/set", b"for dev1") in dev1_got
                    and ("alprd/dev1/hit", b"own") in seen)
        time.sleep(0.5)
        assert dev1_got == [("alprd/dev1/hotlist/set", b"for dev1")]
        assert [p for _, p in seen if p == b"forged"] == []
        assert ("alprd/dev2/hit", b"not the office's to publish") not in seen
    finally:
        close(office)
        close(dev1)
    _, _, anonymous = client(shipped, None)  # no password: refused
    assert anonymous is not None and anonymous.is_failure


# paho 2.2 leaves the socket of a failed TLS handshake to the garbage collector (ResourceWarning)
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_device_over_tls_with_its_password_is_online_and_a_bad_certificate_is_logged_with_its_reason(
    shipped: ShippedBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = tmp_path / "mqtt-password"
    password.write_text(USERS["dev1"] + "\n")
    os.chmod(password, 0o600)
    office, seen, _ = client(shipped, "backoffice")
    office.subscribe("alprd/#", qos=1)
    good = MqttConfig(host="127.0.0.1", port=shipped.port, username="dev1", password_file=password,
                      tls={"ca": shipped.pki["ca"]}, keepalive_s=5)  # type: ignore[arg-type]
    pub = PahoPublisher(good, "dev1", session=1)
    pub.start()
    try:
        assert wait(lambda: pub.connected)
        assert wait(lambda: any(t == "alprd/dev1/status" and json.loads(p)["state"] == "online"
                                for t, p in seen))
    finally:
        pub.stop()
    # a broker certificate from another CA: refused, and the log says why (it used to say only
    # "Client is not connected")
    other = make_pki(tmp_path / "other", "other")
    caplog.set_level(logging.WARNING, logger="alprd.device.publish")
    bad = PahoPublisher(good.model_copy(update={"tls": good.tls.model_copy(update={"ca": other["ca"]})}),  # type: ignore[union-attr]
                    "dev1", session=2)
    bad.start()
    try:
        assert wait(lambda: "CERTIFICATE_VERIFY_FAILED" in bad.connect_error, 15)
        assert not bad.connected
        assert any("CERTIFICATE_VERIFY_FAILED" in r.getMessage() for r in caplog.records)
    finally:
        bad.stop()
        close(office)
        import gc

        gc.collect()  # here, where the warning is expected, not in a later test


def test_mutual_tls_refuses_a_device_without_a_client_certificate(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    broker = ShippedBroker(tmp_path_factory.mktemp("mtls"), mutual=True)
    broker.start()
    try:
        c, _, rc = client(broker, "dev1", cert=(broker.pki["client_crt"], broker.pki["client_key"]))
        assert rc is not None and not isinstance(rc, Exception) and not rc.is_failure
        close(c)
        c, _, refused = client(broker, "dev1", timeout=2.0)  # the broker drops it after the handshake
        assert refused is None or isinstance(refused, Exception) or refused.is_failure
        if refused is None:
            close(c)
    finally:
        broker.kill()


def test_a_password_file_others_can_read_is_refused(tmp_path: Path) -> None:
    password = tmp_path / "mqtt-password"
    password.write_text("secret\n")
    os.chmod(password, 0o644)
    loose = MqttConfig(username="dev1", password_file=password)  # type: ignore[arg-type]
    with pytest.raises(PublishError, match=r"mode 0644.*chmod 600"):
        PahoPublisher(loose, "dev1", session=1)
    os.chmod(password, 0o600)
    PahoPublisher(loose, "dev1", session=1)  # fine now (not started)


# --- a broker whose packet limit is below what we send ----------------------------------------------


@pytest.fixture
def small_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed")
    broker = Mosquitto(tmp_path_factory.mktemp("small"))
    broker.conf.write_text(broker.conf.read_text() + "max_packet_size 600\n")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@dataclass(frozen=True, kw_only=True)
class BigInfo(Body):
    topic: ClassVar[str] = "info"
    big: str


@dataclass(frozen=True, kw_only=True)
class SmallInfo(Body):
    topic: ClassVar[str] = "info2"
    small: int


def test_messages_over_the_brokers_limit_are_not_sent_alarmed_and_no_reconnect_loop(
    small_broker: Mosquitto,
) -> None:
    """A retained info over the broker's limit was resent by paho at every reconnect, the broker
    dropped the connection each time, and 0 of 174 hits got through."""
    outbox = ListOutbox()
    sub = Subscriber(small_broker, "alprd/dev6/#")
    pub = PahoPublisher(cfg(small_broker), "dev6", session=1)
    pub.publish_retained(BigInfo(big="x" * 2000))  # queued before the connection
    pub.publish_retained(SmallInfo(small=1))
    pub.start()
    try:
        outbox.put("hit", "big", {"hit_id": "big", "pad": "x" * 1000})
        for i in range(10):
            outbox.put("hit", f"h{i}", {"hit_id": f"h{i}"})
        assert wait(lambda: (pub.pump(outbox), list(outbox.rows) == [1])[1], 15)  # all but the big one
        assert pub.max_packet == 600
        want = {f"h{i}" for i in range(10)}
        assert sub.wait_for(lambda s: {json.loads(p)["hit_id"] for p in s.on("/hit")} == want)
        assert sub.wait_for(lambda s: bool(s.on("/info2")))
        time.sleep(2.0)
        pub.pump(outbox)
        assert pub.connects == 1, "reconnected: something over the limit was sent"
        assert pub.too_large == {pub.topic("info"): 1, pub.topic("hit"): 1}
        assert not sub.on("/info")
    finally:
        pub.stop()
        sub.close()


def test_forced_reconnect_cycles_lose_no_hit(mosquitto: Mosquitto) -> None:
    outbox = ListOutbox()
    sub = Subscriber(mosquitto, "alprd/dev7/hit")
    pub = PahoPublisher(cfg(mosquitto), "dev7", session=1)
    pub.start()
    n = 0
    try:
        for cycle in range(10):
            assert wait(lambda: pub.connected, 15), f"cycle {cycle}: no reconnect"
            for _ in range(5):
                outbox.put("hit", f"h{n}", {"hit_id": f"h{n}"})
                n += 1
            pub.pump(outbox)
            sock = pub.client.socket()
            if sock is not None:
                sock.close()  # the link dies mid-flight, without DISCONNECT
            wait(lambda: not pub.connected, 5)
        assert wait(lambda: (pub.pump(outbox), not outbox.rows)[1], 30)
        want = {f"h{i}" for i in range(n)}
        assert sub.wait_for(lambda s: {json.loads(p)["hit_id"] for p in s.on("/hit")} >= want, 20)
        assert pub.connects >= 10
    finally:
        pub.stop()
        sub.close()
