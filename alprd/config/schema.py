"""The typed, strict configuration: one pydantic model per section, `extra="forbid"`, bounds and a
description on every field. Each stage receives only its own section.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from .base import CREDENTIALS, Section, resolve_path
from .capture import CaptureConfig

_SHIPPED = resources.files("alprd.models")
PACKAGE_MODELS_DIR = _SHIPPED if isinstance(_SHIPPED, Path) else Path(str(_SHIPPED))
"""The shipped models: the package alprd.models, which is models/ in a checkout (pyproject.toml maps
it) and site-packages/alprd/models in an installed wheel. Always a folder on disk: onnxruntime opens
the files by path."""

Region = Literal["us", "eu", "br", "auto"]
DetectorModel = Literal["plate_det", "plate_det_mit", "plate_det_fast"]
DETECTOR_MODELS: tuple[str, ...] = get_args(DetectorModel)


MAX_CAMERAS = 8
"""One reader serves every camera in turn: past a few, each camera gets too few reads per car."""


class ReaderConfig(Section):
    models_dir: Path = Field(
        PACKAGE_MODELS_DIR, description="Folder with the ONNX models and their contract files."
    )
    region: Region = Field("auto", description="Plate grammar used to rank candidates; auto = any region.")
    threads: int = Field(
        1, ge=1, le=64,
        description="onnxruntime intra-op threads of the line finder and recognizers (their inputs are "
        "a few thousand pixels: a second thread costs more than it saves).",
    )
    detector_threads: int | None = Field(
        None, ge=1, le=64,
        description="onnxruntime intra-op threads of the plate detectors, where most of a read's time "
        "goes; null: the CPUs this process may use, at most 4. The daemon's other threads (paho's, "
        "housekeeping) sleep nearly always, so the detectors can have every core. See "
        "docs/pi-performance.md.",
    )
    detector_model: DetectorModel = Field(
        "plate_det_fast",
        description="First plate detector in models_dir: plate_det_fast (default: a small network, a "
        "seventh of plate_det's time; lower recall on small plates, which the fallback reads), "
        "plate_det (trained partly on AGPL-3.0 test photos) or plate_det_mit (MIT dash-cam frames "
        "and rendered plates only; lower recall). The daemon and `alprd read` read alike. See "
        "models/README.md.",
    )
    fallback_model: DetectorModel | None = Field(
        "plate_det",
        description="When the first detector reads no plate that is confident and fits the "
        "region's grammar, or reads several, this detector reads the frame again at "
        "detector_size (and does the retry_size look); its reads stand, the first's stay for "
        "plates it did not find. Pairs a fast first detector with an accurate one; null: none.",
    )
    detector_size: Annotated[int, Field(ge=320, le=1920, multiple_of=32)] = Field(
        640, description="Long side of the image fed to the plate detector (640 near, 960 distant)."
    )
    retry_size: int | None = Field(
        960, ge=320, le=1920, multiple_of=32,
        description="When the first pass finds no confident plate that fits the region's grammar, "
        "look again with the detector at this input size (distant plates): the closer look; null "
        "disables. In the daemon `closer_look` rations it.",
    )
    closer_look: Literal["frame", "pass"] = Field(
        "pass",
        description="When the daemon takes the closer look (retry_size) at a frame that reads no plate "
        "well: frame = at every such frame, as `alprd read` does with a photo; pass = only while no pass "
        "of the camera is open, not in the second after one closed (the leaving car's motion: on the "
        "stream bench that look read the empty street after every car; without it 84-88% of motion "
        "frames were read, 83-84% with it, the same cars), once until a pass opens or the motion stops. "
        "On the stream bench read frame by frame (BENCHMARKS.md, Daemon, 2026-12-05): frame took the "
        "look at 217 of 523 motion frames and 53% more CPU than pass (15 looks), 12 of 12 cars both; "
        "plates at half size: pass hit 11 of 12 cars, frame 12 (48% more CPU), no closer look 8.",
    )
    full_read_every: int = Field(
        10, ge=1, le=1000,
        description="While a pass of the camera that reads well is open, the daemon reads a frame near "
        "where the pass expects its plate (the near look: a window about three plates wide around its "
        "predicted box, at near_size); every this-many-th frame the fast detector reads the whole frame "
        "too, for a car entering beside it (the accurate one only where the fast one missed the pass's "
        "plate); where the near look finds nothing, the whole frame with every look. 1: every frame "
        "whole. On the stream bench at camera pace (BENCHMARKS.md, Daemon, 2026-12-05) 95-97% of motion "
        "frames were read, 87-89% with both detectors on every periodic whole frame, 66% without the "
        "near look, 12 of 12 cars each (docs/pi-performance.md).",
    )
    empty_fallback_every: int = Field(
        3, ge=1, le=1000,
        description="In the daemon, after a whole frame in which no plate read well (an empty street, "
        "blur, lettering), the fallback detector and the closer look read only every this-many-th such "
        "frame, until a plate reads well; the fast detector reads every frame. 1: every frame. On the "
        "stream bench at camera pace (BENCHMARKS.md, Daemon, 2026-12-05) 95-97% of motion frames were "
        "read, 87-89% counting only frames without a detection as empty, 12 of 12 cars each.",
    )
    near_size: int = Field(
        384, ge=96, le=1920, multiple_of=32,
        description="Long side fed to the detectors for the near look's window (about three plates "
        "wide: the plate about a third of it, some 128 px, the width of the detectors' own second "
        "look, which it then skips). On 158 panned bench frames 384 read as many plates as 256, 320 "
        "and 448 and needed the fallback detector least (21 times, against 28-36).",
    )
    zoom_out: bool = Field(
        False,
        description="Looks for plates that fill the frame (tight crops): a frame under 3/4 of the detector's "
        "size is read first at its own scale on a grey canvas; where nothing fits the grammar well, the "
        "frame padded on every side, then the frame itself read as a plate; in a close-up (a box a sixth "
        "of the frame high) the frame read whole replaces a read of a piece. `alprd read`/`bench` use it. "
        "The daemon does not: on the stream bench frame by frame it ran at 217 of 514 motion frames, took "
        "45% more CPU and found no car more (12 of 12 either way; BENCHMARKS.md, Daemon, 2026-12-05)."
    )
    min_detection_score: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Plate-detector boxes below this score are ignored (null: the model contract's value).",
    )
    tall_row_px: int = Field(
        0, ge=0, le=4096,
        description="0 (default): plate_rec reads every row. Otherwise rows at least this many pixels "
        "high are read by models_dir/plate_rec_tall (a faster recognizer trained with "
        "train_recognizer.py --height 32; none ships: the shipped plate_rec is the model measured "
        "leave-one-source-out), and plate_rec reads again where it is unsure.",
    )
    max_plates: int = Field(8, ge=1, le=64, description="At most this many plates are read per frame.")
    min_confidence: float = Field(
        0.0, ge=0.0, le=1.0, description="Reads below this confidence are dropped."
    )
    max_pixels: int = Field(
        40_000_000, ge=1_000_000, le=1_000_000_000,
        description="Most pixels decoded from one image file (source.kind images): a larger JPEG is "
        "decoded at 1/2, 1/4 or 1/8 scale, any other larger image is refused unread with a message.",
    )


PHOTO_READER: dict[str, Any] = {
    "detector_model": "plate_det_fast", "fallback_model": "plate_det", "retry_size": 960, "zoom_out": True,
}
"""How `alprd read` and `alprd bench` read a photo (one chance per photo): the fast detector
first, the accurate one where that reads nothing well, then a closer look and a wider one. The
daemon reads with the same reader (ReaderConfig's defaults); it only leaves out the wider look
(`zoom_out`) and rations the closer one (`closer_look`), for the reasons their keys give."""


# --- daemon sections (capture, motion, tracking, matching, mqtt, location, metrics, service) ---------


class SourceConfig(Section):
    kind: Literal["picamera2", "opencv", "video", "images"] = Field(
        "opencv",
        description="picamera2 = Pi camera; opencv = USB device index or rtsp://, http:// URL; "
        "video = a file; images = a folder of photos (each its own scene).",
    )
    path: str = Field(
        "0", max_length=4096,
        description="Device index (opencv), stream URL (opencv), file (video) or folder (images).",
    )
    fps: float = Field(
        0.0, ge=0.0, le=240.0,
        description="Replay pace for video/images (frames due per second; late frames are dropped); "
        "0 = as fast as possible. For picamera2 the requested frame rate (0 = camera default).",
    )
    loop: bool = Field(False, description="Restart a video/images source at its end instead of stopping.")
    width: int = Field(1920, ge=64, le=8192, description="Requested capture width.")
    height: int = Field(1080, ge=64, le=8192, description="Requested capture height.")
    reconnect_min_s: float = Field(1.0, gt=0.0, le=600.0, description="First wait before reopening.")
    reconnect_max_s: float = Field(30.0, gt=0.0, le=3600.0, description="Longest wait between reopens.")
    open_timeout_s: float = Field(
        30.0, ge=0.0, le=3600.0,
        description="At start, keep trying to open a live source this long; then raise the camera alarm "
        "and keep retrying with the reconnect backoff (the daemon does not exit).",
    )

    @model_validator(mode="after")
    def _check_source(self) -> SourceConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if self.kind in ("video", "images") and not self.path.strip():
            raise ValueError(f"source.path must name a {'file' if self.kind == 'video' else 'folder'}")
        if self.kind == "picamera2" and self.loop:
            raise ValueError("loop only applies to video and images sources; remove it for picamera2")
        return self


CameraName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
ROI = tuple[int, int, int, int]


def _check_roi(roi: ROI | None) -> None:
    if roi is not None and (roi[2] <= 0 or roi[3] <= 0 or min(roi[:2]) < 0):
        raise ValueError("roi must be [x, y, w, h] with x, y >= 0 and w, h > 0")


class CameraConfig(SourceConfig):
    """One camera of `sources:`: where its frames come from, and what is its own (the rest of the
    config is shared). The old `source:` + `camera:` is the one-camera form of this list."""

    name: CameraName = Field(..., description="Camera name carried in hits, metrics and status.")
    kind: Literal["picamera2", "opencv", "video", "images"] = Field(
        ..., description="picamera2, opencv (USB index or stream URL), video (a file) or images (a folder)."
    )
    path: str = Field(
        ..., max_length=4096,
        description="Device index (opencv), stream URL (opencv), file (video) or folder (images).",
    )
    roi: ROI | None = Field(
        None, description="This camera's region of interest [x, y, w, h] in pixels; null: motion.roi."
    )
    heading_deg: float | None = Field(
        None, ge=0.0, lt=360.0,
        description="Compass bearing this camera looks along (a pole), or with location.gpsd its angle "
        "from the vehicle's heading (0 = forward, 180 = rear); hits carry the camera's bearing.",
    )
    detector_size: int | None = Field(
        None, ge=320, le=1920, multiple_of=32,
        description="Long side fed to the first detectors for this camera; null: reader.detector_size.",
    )

    @model_validator(mode="after")
    def _check_camera_roi(self) -> CameraConfig:
        _check_roi(self.roi)
        return self


class MotionConfig(Section):
    enabled: bool = Field(True, description="Skip plate reading on frames without motion (static scene).")
    threshold: int = Field(25, ge=1, le=255, description="Per-pixel grey-level change that counts as motion.")
    min_area: float = Field(
        0.002, ge=0.0, le=1.0, description="Fraction of the (ROI) area that must change to count as motion."
    )
    hold_frames: int = Field(
        10, ge=0, le=10000, description="Keep reading this many frames after motion stops (vehicle leaving)."
    )
    roi: tuple[int, int, int, int] | None = Field(
        None, description="Region of interest [x, y, w, h] in pixels; motion and plates outside are ignored."
    )

    @model_validator(mode="after")
    def _check_motion_roi(self) -> MotionConfig:
        _check_roi(self.roi)
        return self


class TrackingConfig(Section):
    close_after_frames: int = Field(
        6, ge=1, le=1000, description="A vehicle's pass ends when it has not been read for this many frames."
    )
    max_track_s: float = Field(
        60.0, gt=0.0, le=3600.0, description="Longer passes are closed (a parked car: one event per period)."
    )
    min_iou: float = Field(
        0.1, ge=0.0, le=1.0, description="Overlap with the predicted box that makes two reads one vehicle."
    )
    min_text_similarity: float = Field(
        0.5, ge=0.0, le=1.0, description="Text similarity (1 - edit distance / length) needed with overlap."
    )
    same_text_similarity: float = Field(
        0.8, ge=0.0, le=1.0, description="Text similarity that joins reads without box overlap (fast movers)."
    )
    rehit_after_s: float = Field(
        60.0, ge=0.0, le=86400.0,
        description="A pass of a listed plate that one camera saw less than this long after the same "
        "camera last saw it is the same car (hidden for a moment, parked, stopped at a light): no "
        "second hit. Later, it alerts again with \"repeat\": true. Unlisted passes are stitched alike "
        "and counted once.",
    )


class MatchingConfig(Section):
    min_agreeing_reads: int = Field(
        2, ge=1, le=100,
        description="A hit backed by fewer agreeing reads of one pass is published with verified=false.",
    )
    min_confidence: float = Field(
        0.0, ge=0.0, le=1.0, description="Passes whose voted confidence is below this are not matched."
    )


class MqttTlsConfig(Section):
    ca: Path | None = Field(None, description="CA certificate (PEM) that signed the broker's.")
    cert: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    key: Path | None = Field(None, description="Client private key (PEM) for mutual TLS.")
    insecure: bool = Field(False, description="Skip broker host-name checks (testing only).")

    @model_validator(mode="after")
    def _check_pair(self) -> MqttTlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls.cert and tls.key go together: set both or neither")
        return self


def split_endpoint(entry: str) -> tuple[str, int]:
    """`host:port` or `[v6addr]:port` -> (host, port); ValueError says what is wrong."""
    host, sep, port = entry.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{entry!r}: write an IPv6 address in brackets, e.g. [::1]:1883")
    if not sep or not host or len(host) > 253 or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{entry!r} is not host:port with a port from 1 to 65535")
    return host, int(port)


class MqttConfig(Section):
    enabled: bool = Field(True, description="Publish over MQTT (off: hits stay in the outbox).")
    host: str = Field("localhost", min_length=1, max_length=253, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual with TLS).")
    hosts: tuple[str, ...] = Field(
        (), max_length=32,
        description='Brokers of one cluster as "host:port" ("[v6addr]:port"), tried in this order: the '
        "device stays on the first that answers and, when it loses it, goes on to the next with the "
        "jittered reconnect backoff. Empty: host and port are the one broker (set one or the other).",
    )
    protocol: Literal["5", "3.1.1"] = Field(
        "5", description="MQTT protocol version; 3.1.1 for brokers that lack 5 (e.g. amqtt)."
    )
    topic_prefix: str = Field(
        "alprd", min_length=1, max_length=128, pattern=r"^[^#+\x00]+$",
        description="Topics are <topic_prefix>/<device_id>/status|info|hit|summary|metrics|hotlist/...",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive (Last Will after ~1.5x).")
    session_expiry_s: int = Field(
        86400, ge=0, le=4294967295,
        description="MQTT 5 session expiry (clean start is off); not used with clean_session.",
    )
    clean_session: bool = Field(
        False,
        description="Connect without a session on the broker (MQTT 3.1.1 clean session; MQTT 5 clean start "
        "with session expiry 0). Hits lose nothing (the outbox sends again what the broker, or with "
        "app_ack the back office, has not acknowledged), but the broker keeps nothing for the device "
        "while it is offline: a command sent meanwhile (a hotlist/set push) is dropped, not delivered at "
        "the reconnect (retained ones, such as hotlist/key, still arrive). On a RabbitMQ 3.10 cluster it "
        "spares every device a replicated session queue, whose catch-up slows the cluster when a node "
        "returns (docs/fleet.md). Off: a persistent session, which holds commands for an offline device.",
    )
    subscribe_qos: Literal[0, 1] = Field(
        1,
        description="QoS of the device's subscriptions (acks, commands). 0: the broker neither keeps nor "
        "resends them, so an ack or a command that meets a lost connection is gone (the outbox sends the "
        "hit again: a duplicate, never a loss; headquarters pushes a hot list again when hotlist/result "
        "does not come). With clean_session on a RabbitMQ 3.10 cluster, 0 keeps them in a transient "
        "queue that goes with its node, where a QoS 1 one blocks the device's subscription on any other "
        "node until that node returns (docs/fleet.md).",
    )
    username: str | None = Field(None, max_length=256, description="Broker user name, if any.")
    password_file: Path | None = Field(
        None, description="File holding the broker password (e.g. $CREDENTIALS_DIRECTORY/mqtt-password).",
    )
    tls: MqttTlsConfig | None = Field(None, description="Use TLS; leave out for plain TCP on a trusted link.")
    reconnect_min_s: int = Field(1, ge=1, le=600, description="First reconnect wait (jittered).")
    reconnect_max_s: int = Field(60, ge=1, le=3600, description="Longest reconnect wait (jittered).")
    resend_after_s: float = Field(
        30.0, gt=0.0, le=3600.0, description="Publish an outbox row again if unacknowledged this long."
    )
    max_inflight: int = Field(100, ge=1, le=65535, description="Outbox rows published, unacked.")
    max_command_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024,
        description="Largest hotlist/set payload accepted; bigger ones are refused unread.",
    )
    app_ack: bool = Field(
        False,
        description="Keep hits until the back office also acknowledges on <p>/<device>/ack, with an ack "
        "signed by ack.key (alprd.acks); unsigned or wrongly signed acks are refused and counted.",
    )
    ack_pub: Path = Field(
        CREDENTIALS / "ack.pub",
        description="Agency Ed25519 public key that signs acks (ack.pub from `alprd keys agency`); "
        "read only with app_ack.",
    )
    drain_timeout_s: float = Field(
        30.0, ge=0.0, le=3600.0,
        description="At the end of a finite source or on SIGTERM, wait this long for the outbox to empty.",
    )
    homeassistant: bool = Field(
        False,
        description="Publish Home Assistant MQTT discovery (homeassistant/sensor/...): status, alarms, fps, "
        "hits today and hot-list version, with <p>/<device>/availability; no plate text.",
    )

    _resolve = field_validator("ack_pub")(resolve_path)

    @field_validator("hosts")
    @classmethod
    def _check_hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for entry in v:
            split_endpoint(entry)  # raises ValueError with what is wrong
        return v

    def endpoints(self) -> list[tuple[str, int]]:
        """The brokers to try, in order: `hosts`, or else the one `host`:`port`."""
        return [split_endpoint(e) for e in self.hosts] if self.hosts else [(self.host, self.port)]

    @model_validator(mode="after")
    def _check_mqtt(self) -> MqttConfig:
        if self.hosts and self.model_fields_set & {"host", "port"}:
            raise ValueError("set mqtt.hosts or mqtt.host/port, not both (a one-broker list is the same)")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs a username")
        return self


class GpsdConfig(Section):
    host: str = Field("127.0.0.1", min_length=1, max_length=253, description="gpsd host.")
    port: int = Field(2947, ge=1, le=65535, description="gpsd TCP port.")
    max_age_s: float = Field(10.0, gt=0.0, le=3600.0, description="A fix older than this is not reported.")


class LocationConfig(Section):
    lat: float | None = Field(None, ge=-90.0, le=90.0, description="Static latitude (a pole-mounted camera).")
    lon: float | None = Field(None, ge=-180.0, le=180.0, description="Static longitude.")
    heading_deg: float | None = Field(
        None, ge=0.0, lt=360.0, description="Compass bearing the camera looks along (static installs)."
    )
    gpsd: GpsdConfig | None = Field(None, description="Read position/heading from gpsd (a car).")

    @model_validator(mode="after")
    def _check_latlon(self) -> LocationConfig:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon go together: set both or neither")
        return self


class MetricsConfig(Section):
    interval_s: float = Field(60.0, ge=1.0, le=86400.0, description="Seconds between metrics messages.")


class StorageConfig(Section):
    dir: Path = Field(
        Path("/var/lib/alprd"),
        description="SQLite file (outbox, evidence index, audit chain, state), sealed evidence, device key.",
    )
    max_db_mb: int = Field(
        512, ge=16, le=1_000_000, description="Cap on the SQLite file; writes past it fail as 'storage full'."
    )

    _resolve = field_validator("dir")(resolve_path)


class HotlistConfig(Section):
    bundle: Path = Field(
        Path("/var/lib/alprd/hotlist.bundle"),
        description="Where the installed (still encrypted) hot-list bundle is kept.",
    )
    list_id: str = Field(
        "default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="The list this device runs (`alprd hotlist pack --list-id`): bundles of any other "
        "list are refused whatever their version; each list id keeps its own rollback floor.",
    )
    key_source: Literal["file", "hq"] = Field(
        "file",
        description="file: list_key is a file (a systemd credential; LoadCredentialEncrypted= keeps it "
        "TPM-sealed). hq: there is no list key on the device; headquarters sends it sealed to the "
        "device's own X25519 key, retained on <prefix>/<device>/hotlist/key, and it lives only in RAM.",
    )
    list_key: Path = Field(
        CREDENTIALS / "list.key", description="32-byte list key file (secret, mode 0600); key_source file."
    )
    device_key: Path | None = Field(
        None,
        description="key_source hq: the device's X25519 key that the list key is sealed to (secret, mode "
        "0600); null: <storage.dir>/device-x25519.key, made at the first start (`alprd keys device`).",
    )
    signing_pub: Path = Field(
        CREDENTIALS / "signing.pub", description="Agency Ed25519 public key that signs bundles."
    )
    lookalike_max: int = Field(
        1, ge=0, le=3, description="Most look-alike substitutions (0 vs O, 8 vs B ...) a match may need."
    )
    lookalike_classes: tuple[str, ...] = Field(
        ("0ODQ", "1IL", "2Z", "5S", "8B", "6G"),
        description="Groups of characters the reader confuses; each character in at most one group.",
    )

    _resolve = field_validator("bundle", "list_key", "signing_pub", "device_key")(resolve_path)

    @field_validator("lookalike_classes")
    @classmethod
    def _check_classes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for group in v:
            if len(group) < 2 or not all(c.isascii() and (c.isdigit() or c.isupper()) for c in group):
                raise ValueError(f"class {group!r} needs 2+ characters from A-Z and 0-9")
            if seen & set(group):
                raise ValueError(f"character {sorted(seen & set(group))[0]!r} is in two classes")
            seen |= set(group)
        return v


class PrivacyConfig(Section):
    summary_mode: Literal["counts", "tokens"] = Field(
        "counts",
        description="counts: per-window totals only; tokens: also keyed per-window digests of non-hits.",
    )
    summary_interval_s: int = Field(
        900, ge=60, le=86400, description="Summary window; the token key is ratcheted at each window."
    )
    token_bits: Literal[16, 18, 64] = Field(
        16, description="Bits kept of each token (16/18 collide on purpose: counting, not tracking)."
    )
    evidence_pub: Path = Field(
        CREDENTIALS / "evidence.pub", description="Agency X25519 public key that hit evidence is sealed to."
    )
    evidence_ttl_s: int = Field(
        86400, ge=60, le=31_536_000, description="Unacknowledged evidence is deleted after this long."
    )
    evidence_max_kb: int = Field(
        256, ge=16, le=16384,
        description="Largest sealed evidence (it is published whole on <p>/<device>/evidence/<hit_id>): "
        "the frame is made smaller, then left out, until crop and frame fit.",
    )

    _resolve = field_validator("evidence_pub")(resolve_path)


class PolicyConfig(Section):
    """The usage and privacy policy elements (California SB 34, Civil Code 1798.90.51)."""

    purpose: str = Field(..., min_length=3, max_length=500, description="Authorized purposes of use.")
    custodian: str = Field(
        ..., min_length=3, max_length=200, description="Who is responsible for the system and its data."
    )
    retention_days: int = Field(
        ..., ge=1, le=3650, description="Longest time any ALPR data (hits, outbox) is kept on the device."
    )
    sharing: str = Field(
        ..., min_length=2, max_length=500, description="With whom data may be shared, and how."
    )


class Config(Section):
    """The whole configuration file."""

    device_id: str = Field(
        "alprd-01", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Unique device name; MQTT client id and topic level.",
    )
    camera: CameraName = Field("cam0", description="Camera name carried in events (with `source:`).")
    reader: ReaderConfig = Field(default_factory=ReaderConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    sources: tuple[CameraConfig, ...] = Field(
        (), max_length=MAX_CAMERAS,
        description="Several cameras read by one daemon (one reader serves them all, each has its own "
        "motion gate, passes and camera alarm); empty: the one camera of `source:` and `camera:`.",
    )
    motion: MotionConfig = Field(default_factory=MotionConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    matching: MatchingConfig = Field(default_factory=MatchingConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    location: LocationConfig = Field(default_factory=LocationConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    hotlist: HotlistConfig = Field(default_factory=HotlistConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    policy: PolicyConfig = Field(
        ..., description="Required: purpose, custodian, retention_days, sharing (the SB 34 policy elements)."
    )

    @property
    def cameras(self) -> tuple[CameraConfig, ...]:
        """Every camera: `sources:`, or `source:` + `camera:` (with motion.roi and
        location.heading_deg) as a list of one."""
        if self.sources:
            return self.sources
        # location.heading_deg is a pole's compass bearing; with gpsd the car's heading replaces it
        heading = self.location.heading_deg if self.location.gpsd is None else None
        return (CameraConfig(**self.source.model_dump(), name=self.camera, roi=self.motion.roi,
                             heading_deg=heading),)

    @model_validator(mode="after")
    def _check(self) -> Config:
        # (compared with the defaults, not by which keys were given: a dumped config validates again)
        if self.sources and (self.source != SourceConfig() or self.camera != "cam0"):
            raise ValueError("give either sources (several cameras) or source and camera (one), not both")
        names = [c.name for c in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"sources: camera names must differ, got {names}")
        if self.privacy.evidence_ttl_s > self.policy.retention_days * 86400:
            raise ValueError(
                "privacy.evidence_ttl_s is longer than policy.retention_days allows; "
                "lower the TTL or raise retention_days"
            )
        return self


def config_hash(cfg: Config) -> str:
    """SHA-256 of the canonical JSON form of the validated config (for audit and `info`)."""
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()
