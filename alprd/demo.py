"""`alprd demo`: the whole daemon on a clip it renders itself, with an embedded MQTT broker.

The clip is synthetic (no licence-clean real footage can be shipped): cars carrying plate-like
signs with known text drive across a rendered street, several frames each, so tracking and voting
are exercised. The demo generates agency keys and a hot list holding some of the plates, starts a
broker on loopback (mosquitto when installed, else amqtt in a child process), runs the real
pipeline over the clip and prints what a back-office subscriber receives. It ends by itself.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import PublishError
from .exits import Exit
from .types import Image

WIDTH, HEIGHT, FPS = 1280, 720, 10

# (plate text, on the demo hot list?, body colour BGR, lane y, speed px/frame, first frame)
VEHICLES: tuple[tuple[str, bool, tuple[int, int, int], int, int, int], ...] = (
    ("7ABC123", True, (40, 40, 160), 300, 48, 0),
    ("KDX4521", False, (150, 110, 40), 330, -52, 22),
    ("5MNP884", True, (60, 130, 60), 290, 45, 46),
    ("HRT2290", False, (80, 80, 80), 320, -50, 70),
)
HOTLIST_EXTRA = ("ZZZ9999", "CAR*01")


@dataclass(frozen=True)
class Vehicle:
    plate: str
    listed: bool
    colour: tuple[int, int, int]
    lane_y: int
    speed: int
    start: int


def _street() -> Image:
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    sky = np.linspace(200, 140, 220, dtype=np.uint8)
    img[:220] = np.stack([sky, sky - 10, sky - 40], axis=1)[:, None, :]
    img[220:] = (70, 72, 75)
    for x in range(0, WIDTH, 160):
        cv2.rectangle(img, (x + 20, 540), (x + 100, 552), (210, 210, 210), -1)
    for i, x in enumerate(range(30, WIDTH, 230)):
        cv2.rectangle(img, (x, 90 - 15 * (i % 3)), (x + 150, 222), (90 + 12 * i % 60, 100, 120), -1)
    rng = np.random.default_rng(7)
    noise = rng.normal(0, 4, img.shape)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _plate(text: str) -> Image:
    """A US-style plate: white, dark border, large dark characters."""
    w, h = 260, 130
    plate = np.full((h, w, 3), 245, np.uint8)
    cv2.rectangle(plate, (3, 3), (w - 4, h - 4), (40, 40, 40), 4)
    font, scale, thick = cv2.FONT_HERSHEY_DUPLEX, 2.0, 5
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    scale *= min(1.0, (w - 30) / tw)
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    org = ((w - tw) // 2, (h + th) // 2 + 4)
    cv2.putText(plate, text, org, font, scale, (60, 30, 20), thick, cv2.LINE_AA)
    cv2.putText(plate, "DEMO", (w // 2 - 30, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (40, 40, 170), 2)
    return plate


def _draw_vehicle(img: Image, v: Vehicle, x: int) -> None:
    body_w, body_h = 560, 260
    y = v.lane_y
    cv2.rectangle(img, (x, y), (x + body_w, y + body_h), v.colour, -1)
    cv2.rectangle(img, (x + 60, y - 90), (x + body_w - 60, y), tuple(int(c * 0.8) for c in v.colour), -1)
    cv2.rectangle(img, (x + 90, y - 75), (x + body_w - 90, y - 5), (170, 150, 120), -1)
    for wx in (x + 90, x + body_w - 90):
        cv2.circle(img, (wx, y + body_h), 45, (20, 20, 20), -1)
    plate = _plate(v.plate)
    ph, pw = plate.shape[:2]
    px, py = x + (body_w - pw) // 2, y + 90
    x0, x1 = max(px, 0), min(px + pw, WIDTH)
    if x1 > x0:
        img[py : py + ph, x0:x1] = plate[:, x0 - px : x1 - px]


def vehicles() -> list[Vehicle]:
    return [Vehicle(*v) for v in VEHICLES]


def frame_count() -> int:
    return max(v.start for v in vehicles()) + 26


def render_frames(n: int | None = None) -> Iterator[Image]:
    """The clip, frame by frame: each car crosses the picture in ~25 frames."""
    street = _street()
    n = n or frame_count()
    for i in range(n):
        img = street.copy()
        for v in vehicles():
            k = i - v.start
            if k < 0:
                continue
            x = -560 + 40 + v.speed * k if v.speed > 0 else WIDTH - 40 + v.speed * k
            if -560 < x < WIDTH:
                _draw_vehicle(img, v, x)
        yield img


def render_clip(path: Path, n: int | None = None) -> Path:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    if not out.isOpened():
        raise RuntimeError(f"cannot write the demo clip {path}")
    for img in render_frames(n):
        out.write(img)
    out.release()
    return path


# --- broker ---------------------------------------------------------------------------------------


def parse_broker(text: str) -> tuple[str, int]:
    """`--broker HOST:PORT` (an IPv6 address in brackets: [::1]:1883); ValueError says what is wanted."""
    host, sep, port_s = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise ValueError(f"want HOST:PORT with a port 1-65535, e.g. 127.0.0.1:1883; got {text!r}")
    return host, int(port_s)


def check_broker(host: str, port: int, timeout: float = 5.0) -> None:
    """Fail fast (before the clip is rendered) when nothing listens at the broker's address."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise PublishError(
            f"cannot reach the MQTT broker at {host}:{port} ({e.strerror or e}); start it, or leave "
            "--broker out to use an embedded one"
        ) from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the embedded broker exited with {proc.returncode}")
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.1)
    raise RuntimeError("the embedded broker did not start within 15 s")


@contextmanager
def embedded_broker(workdir: Path) -> Iterator[tuple[str, int, str]]:
    """(host, port, protocol): mosquitto (MQTT 5) if installed, else amqtt (MQTT 3.1.1 only)."""
    port = free_port()
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if mosquitto:
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        cmd = [mosquitto, "-c", str(conf)]
        protocol = "5"
    else:
        cmd = [sys.executable, "-m", "alprd.demo", "--amqtt", str(port)]
        protocol = "3.1.1"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        yield "127.0.0.1", port, protocol
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _amqtt_main(port: int) -> None:  # pragma: no cover - runs in the broker child process
    import asyncio

    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }

    async def serve() -> None:
        broker = Broker(config)
        await broker.start()
        await asyncio.Event().wait()

    asyncio.run(serve())


# --- the back office, as the demo prints it -----------------------------------------------------------


class Printer:
    """Subscribes to the device's topics and prints each message as it arrives."""

    def __init__(self, host: str, port: int, protocol: str, prefix: str, out: Any = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.out = out or sys.stdout
        self.hits: list[dict[str, Any]] = []
        self.summaries: list[dict[str, Any]] = []
        self.statuses: list[str] = []
        self._lock = threading.Lock()
        self.prefix = prefix
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="demo-backoffice",
            protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311,
        )
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/#", qos=1)
        try:
            self.client.connect(host, port, 30)
        except OSError as e:
            raise PublishError(
                f"cannot connect to the MQTT broker at {host}:{port}: {e.strerror or e}"
            ) from None
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        below = msg.topic[len(self.prefix) + 1 :]
        kind = below.split("/", 1)[-1]
        if below.split("/")[-2:-1] == ["evidence"]:  # sealed bytes, not JSON: only the HQ key opens them
            print(f"EVIDENCE {kind.rsplit('/', 1)[-1]}  {len(msg.payload)} bytes sealed to evidence.pub",
                  file=self.out, flush=True)
            return
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = {"raw": msg.payload[:80].decode("utf-8", "replace")}
        with self._lock:
            if kind == "hit":
                self.hits.append(body)
                m = body.get("match", {})
                line = (
                    f"HIT      {body.get('plate')}  reason={m.get('reason')!r} kind={m.get('kind')} "
                    f"priority={m.get('priority')} verified={body.get('verified')} reads={body.get('reads')} "
                    f"confidence={body.get('confidence')} p_not_entry={m.get('p_not_entry')} "
                    f"camera={body.get('camera')} direction={body.get('direction')}"
                )
            elif kind == "summary":
                self.summaries.append(body)
                counts = {k: v for k, v in body.items() if k not in ("v", "ts", "device_id")}
                line = f"SUMMARY  {json.dumps(counts, sort_keys=True)[:300]}"
            elif kind == "status":
                self.statuses.append(str(body.get("state")))
                retained = " (retained)" if msg.retain else ""
                line = f"STATUS   {body.get('state')} session={body.get('session')}{retained}"
            elif kind == "info":
                line = (
                    f"INFO     version={body.get('version')} hotlist={body.get('hotlist')} "
                    f"models={sorted(body.get('models', {}))}"
                )
            elif kind == "manifest":
                out, into = len(body.get("published", [])), len(body.get("subscribed", []))
                line = (f"MANIFEST config={str(body.get('config'))[:16]} topics out={out} in={into} "
                        "(alprd policy manifest prints it)")
            elif kind == "metrics":
                line = (
                    f"METRICS  frames={body.get('frames_in')} processed={body.get('frames_processed')} "
                    f"rss_mb={body.get('rss_mb')}"
                )
            else:
                line = f"{kind.upper():8} {json.dumps(body)[:200]}"
            print(line, file=self.out, flush=True)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_demo(broker: str | None = None, keep: Path | None = None, frames: int = 0) -> int:
    """Raises PublishError when the broker cannot be reached; 2 for a malformed --broker."""
    target: tuple[str, int] | None = None
    if broker:
        try:
            target = parse_broker(broker)
        except ValueError as e:
            print(f"alprd demo: --broker: {e}", file=sys.stderr)
            return Exit.USAGE
        check_broker(*target)
    workdir = keep or Path(tempfile.mkdtemp(prefix="alprd-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(f"alprd demo: rendering a synthetic drive-by clip in {workdir} ...", flush=True)
        clip = render_clip(workdir / "driveby.avi", frames or None)
        if target is not None:
            setup = prepare(workdir, clip, *target, "5")
            return run_prepared(setup)
        with embedded_broker(workdir) as (host, port, protocol):
            print(f"alprd demo: embedded MQTT broker on {host}:{port} (MQTT {protocol})", flush=True)
            setup = prepare(workdir, clip, host, port, protocol)
            return run_prepared(setup)
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) == 3 and sys.argv[1] == "--amqtt":
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        _amqtt_main(int(sys.argv[2]))


# --- wiring the demo ---------------------------------------------------------------------------------


@dataclass
class DemoSetup:
    workdir: Path
    clip: Path
    host: str
    port: int
    protocol: str


def prepare(workdir: Path, clip: Path, host: str, port: int, protocol: str) -> DemoSetup:
    """Agency keys and a signed, encrypted hot list holding some of the clip's plates."""
    from datetime import UTC, datetime, timedelta

    from .privacy.hotlist import entries_from_rows, pack_bundle
    from .privacy.keys import generate_agency_keys, load_list_key, load_signing_key

    keys = workdir / "keys"
    if not (keys / "list.key").exists():
        generate_agency_keys(keys)
    rows = [
        {"plate": v.plate, "reason": "demo: stolen vehicle", "priority": "10"} for v in vehicles() if v.listed
    ]
    rows += [{"plate": p, "reason": "demo: other entry"} for p in HOTLIST_EXTRA]
    bundle = pack_bundle(
        entries_from_rows(rows), list_key=load_list_key(keys / "list.key"),
        signing_key=load_signing_key(keys / "signing.key"),
        version=int(time.time()), issued=datetime.now(UTC), valid_for=timedelta(hours=1), list_id="demo",
    )
    incoming = workdir / "incoming.bundle"
    incoming.write_bytes(bundle)
    listed = sum(v.listed for v in vehicles())
    print(f"alprd demo: hot list with {len(rows)} entries packed and signed "
          f"({listed} of the {len(vehicles())} passing cars are on it)", flush=True)
    return DemoSetup(workdir, clip, host, port, protocol)


def run_prepared(setup: DemoSetup) -> int:
    from .config import Config
    from .device.daemon import build

    keys = setup.workdir / "keys"
    storage = setup.workdir / "storage"
    cfg = Config.model_validate({
        "device_id": "demo-01",
        "camera": "demo-cam",
        "reader": {"region": "us"},
        "source": {"kind": "video", "path": str(setup.clip), "fps": 0},
        "motion": {"enabled": True},
        "tracking": {"close_after_frames": 4},
        "mqtt": {"host": setup.host, "port": setup.port, "protocol": setup.protocol, "drain_timeout_s": 15,
                 "ack_pub": str(keys / "ack.pub")},
        "location": {"lat": 52.52, "lon": 13.405, "heading_deg": 90},
        "metrics": {"interval_s": 5},
        "storage": {"dir": str(storage)},
        "hotlist": {"list_id": "demo", "bundle": str(storage / "hotlist.bundle"),
                    "list_key": str(keys / "list.key"), "signing_pub": str(keys / "signing.pub")},
        "privacy": {"evidence_pub": str(keys / "evidence.pub"), "summary_interval_s": 3600},
        "policy": {
            "purpose": "demonstration on a synthetic clip", "custodian": "whoever runs alprd demo",
            "retention_days": 1, "sharing": "none: loopback only",
        },
    })
    from .privacy.hotlist import HotListInstaller, load_keys
    from .store import Store

    # installed the way `alprd hotlist install` does it: signature, expiry and rollback checked
    with Store(storage) as store:
        installer = HotListInstaller.from_config(cfg.hotlist, store, *load_keys(cfg.hotlist), actor="demo")
        version = installer.install((setup.workdir / "incoming.bundle").read_bytes())
    print(f"alprd demo: hot list version {version} verified and installed", flush=True)
    printer = Printer(setup.host, setup.port, setup.protocol, f"alprd/{cfg.device_id}")
    stop = threading.Event()
    try:
        print("alprd demo: loading models ...", flush=True)
        daemon = build(cfg, stop)
        cap = cv2.VideoCapture(str(setup.clip))
        n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        print(f"alprd demo: reading {n_frames} frames of {setup.clip.name} ...", flush=True)
        t0 = time.monotonic()
        rc = daemon.run(stop)
        took = time.monotonic() - t0
        time.sleep(1.0)  # let the subscriber print the last messages
        n = daemon.pipeline.frames
        print(
            f"alprd demo: done in {took:.1f} s: {n} frames ({daemon.pipeline.processed} read, "
            f"{daemon.pipeline.skipped} skipped by the motion gate), {daemon.recorder.hits} hit(s), "
            f"{daemon.recorder.passes} other pass(es) counted but never published, "
            f"{daemon.recorder.noise} read(s) of no vehicle counted as noise", flush=True,
        )
        listed = sorted(v.plate for v in vehicles() if v.listed)
        got = sorted({str(h.get("plate")) for h in printer.hits})
        print(f"alprd demo: listed plates {listed}; hits received {got}", flush=True)
        return rc if printer.hits else Exit.FAILURE
    finally:
        printer.close()
