"""Frame sources: Pi camera, OpenCV (USB device, RTSP/HTTP stream), video file, folder of images.

Every source hands out only the newest frame. A frame that is already late when the pipeline asks
for the next one is dropped and counted, never queued (Frigate's `capture_frames`, picamera2 keeping
only the newest request): a plate reader that falls behind must skip frames, not lag further.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

import cv2
import numpy as np

from ..clock import Backoff, Clock, SystemClock
from ..config import SourceConfig
from ..errors import CaptureError, ImageError
from ..read.imageio import MAX_DECODE_PIXELS, read_image
from ..types import Frame

if TYPE_CHECKING:
    from cv2.typing import MatLike

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


@dataclass
class CaptureStats:
    """Counters a source keeps; the daemon copies them into metrics and status."""

    frames_in: int = 0
    dropped: int = 0
    reconnects: int = 0
    errors: int = 0
    connected: bool = False
    last_error: str = ""
    decode_ms: float = 0.0
    """What the last frame cost to grab and decode, the frames dropped before it included (the
    daemon's `capture` stage): a file or stream decodes every frame it drops, a camera does not."""


class FrameSource(Protocol):
    """Where frames come from. `read` never blocks longer than `timeout` seconds.

    A context manager: leaving the `with` closes it (open it with `open()` or `open_with_retry`)."""

    stats: CaptureStats

    def open(self) -> None:
        """Open the device, stream or file; raises CaptureError with a message that says what to do."""

    def read(self, timeout: float) -> Frame | None:
        """The newest frame, or None if none is ready yet (retry) or the source has finished."""

    @property
    def finished(self) -> bool:
        """True once a finite source (file or folder without `loop`) has delivered its last frame."""

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class _Source:
    """What every source shares: `with source:` closes it at the end."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoCapture(Protocol):
    """The part of `cv2.VideoCapture` a VideoSource uses (a test hands in a scripted camera)."""

    def isOpened(self) -> bool: ...  # OpenCV names it so

    def release(self) -> None: ...

    def set(self, prop: int, value: float) -> bool: ...

    def get(self, prop: int) -> float: ...

    def grab(self) -> bool: ...

    def retrieve(self) -> tuple[bool, MatLike]: ...

    def read(self) -> tuple[bool, MatLike]: ...


class _Pacer:
    """Replays a finite source at `fps`: frame i is due at t0 + i / fps; frames already past due are late."""

    def __init__(self, fps: float, clock: Clock) -> None:
        self.fps = fps
        self.clock = clock
        self.t0: float | None = None

    def restart(self) -> None:
        self.t0 = None

    def due_index(self) -> int:
        """The index of the frame a live camera would be showing now."""
        now = self.clock.monotonic()
        if self.t0 is None:
            self.t0 = now
        return int((now - self.t0) * self.fps)

    def wait_for(self, index: int, timeout: float) -> bool:
        """Sleep until frame `index` is due (at most `timeout`); True if it is due now."""
        assert self.t0 is not None
        wait = self.t0 + index / self.fps - self.clock.monotonic()
        if wait > timeout:
            self.clock.sleep(timeout)
            return False
        self.clock.sleep(wait)
        return True


def _is_device_index(path: str) -> bool:
    return path.strip().isdigit()


def _is_url(path: str) -> bool:
    return "://" in path


class VideoSource(_Source):
    """OpenCV capture: a device index (USB camera), an RTSP/HTTP URL, or a video file.

    Live sources (device, URL) are reopened with backoff when they fail; a file ends (or loops).
    """

    def __init__(
        self,
        cfg: SourceConfig,
        camera: str = "cam0",
        clock: Clock | None = None,
        opener: Callable[[str | int], VideoCapture | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.camera = camera
        self.clock = clock or SystemClock()
        self.stats = CaptureStats()
        self.live = _is_device_index(cfg.path) or _is_url(cfg.path)
        self._target: str | int = int(cfg.path) if _is_device_index(cfg.path) else cfg.path
        self._opener = opener or _open_cv
        self._cap: VideoCapture | None = None
        self._seq = 0
        self._index = 0  # next frame index in a file
        self._finished = False
        self._backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self._retry_at = 0.0
        self._pacer = _Pacer(cfg.fps, self.clock) if (cfg.fps > 0 and not self.live) else None
        self._frame_period = 1.0 / 30.0

    @property
    def finished(self) -> bool:
        return self._finished

    def _describe(self) -> str:
        if isinstance(self._target, int):
            return f"camera device {self._target} (/dev/video{self._target})"
        if _is_url(str(self._target)):
            # never log stream credentials (rtsp://user:pass@host)
            scheme, _, rest = str(self._target).partition("://")
            return f"stream {scheme}://{rest.rsplit('@', 1)[-1]}"
        return f"video file {self._target}"

    def open(self) -> None:
        if not self.live and not Path(str(self._target)).is_file():
            raise CaptureError(f"{self._describe()} does not exist; check source.path")
        cap = self._opener(self._target)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            self.stats.connected = False
            hint = (
                "check that the camera is plugged in and that this user may read /dev/video*"
                if isinstance(self._target, int)
                else "check the URL, credentials and network"
                if self.live
                else "check that the file is a video OpenCV can decode"
            )
            raise CaptureError(f"cannot open {self._describe()}: {hint}")
        if isinstance(self._target, int):
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
            # a one-frame driver buffer: the newest frame, not one from a second ago
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._frame_period = 1.0 / fps if 1.0 <= fps <= 240.0 else 1.0 / 30.0
        self._cap = cap
        self._index = 0
        self.stats.connected = True
        self.stats.last_error = ""
        self._backoff.reset()
        if self._pacer is not None:
            self._pacer.restart()

    def _lost(self, why: str) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self.stats.connected = False
        self.stats.errors += 1
        self.stats.last_error = why
        delay = self._backoff.next_delay()
        self._retry_at = self.clock.monotonic() + delay
        log.warning("%s; retrying in %.1f s", why, delay)

    def read(self, timeout: float) -> Frame | None:
        if self._finished:
            return None
        if self._cap is None:
            if not self.live:
                self._finished = True
                return None
            wait = self._retry_at - self.clock.monotonic()
            if wait > 0:
                self.clock.sleep(min(wait, timeout))
                return None
            try:
                self.open()
                self.stats.reconnects += 1
                log.info("%s reopened", self._describe())
            except CaptureError as e:
                self._lost(str(e))
                return None
        return self._read_live() if self.live else self._read_file(timeout)

    def _read_live(self) -> Frame | None:
        cap = self._cap
        assert cap is not None  # read() reopens it first
        # Frames that come back faster than half a frame period were sitting in a buffer: stale.
        # Skip them until a grab has to wait for the camera; that frame is live.
        skipped = 0
        t0 = time.perf_counter()
        t = self.clock.monotonic()
        ok = bool(cap.grab())
        while ok and skipped < 64 and self.clock.monotonic() - t < self._frame_period / 2:
            skipped += 1
            t = self.clock.monotonic()
            ok = bool(cap.grab())
        if not ok:
            self._lost(f"{self._describe()}: no frame (camera unplugged or stream dropped)")
            return None
        ok, image = cap.retrieve()
        if not ok or image is None:
            self._lost(f"{self._describe()}: frame could not be decoded")
            return None
        self.stats.dropped += skipped
        self.stats.decode_ms = (time.perf_counter() - t0) * 1000
        return self._frame(image, skipped)

    def _read_file(self, timeout: float) -> Frame | None:
        cap = self._cap
        assert cap is not None  # read() ends a file whose capture is gone
        dropped = 0
        t0 = time.perf_counter()
        if self._pacer is not None:
            due = self._pacer.due_index()
            if self._index < due:
                for _ in range(due - self._index):
                    if not cap.grab():
                        return self._end_of_file()
                    self._index += 1
                    dropped += 1
                    self.stats.dropped += 1
            elif not self._pacer.wait_for(self._index, timeout):
                return None
            else:
                t0 = time.perf_counter()  # the wait for the frame is not its decoding
        ok, image = cap.read()
        if not ok or image is None:
            return self._end_of_file()
        self._index += 1
        self.stats.decode_ms = (time.perf_counter() - t0) * 1000
        return self._frame(image, dropped)

    def _end_of_file(self) -> Frame | None:
        if self.cfg.loop and self._index > 0:
            if self._cap is not None:
                self._cap.release()
            self._cap = None
            self.open()
            return None
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self.stats.connected = False
        self._finished = True
        return None

    def _frame(self, image: MatLike, dropped: int) -> Frame:
        self._seq += 1
        self.stats.frames_in += 1
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        return Frame(
            image=np.ascontiguousarray(image, dtype=np.uint8), ts=self.clock.time(),
            mono=self.clock.monotonic(), seq=self._seq, camera=self.camera, dropped=dropped,
        )

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self.stats.connected = False


def _open_cv(target: str | int) -> VideoCapture:
    if isinstance(target, int):
        return cv2.VideoCapture(target)
    if _is_url(target):
        # FFmpeg for RTSP/HTTP: honours open/read timeouts, so a dead stream does not hang the loop
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
        return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
    return cv2.VideoCapture(target)


class ImageDirSource(_Source):
    """A folder of photos in sorted order; each photo is its own scene (no tracking across photos)."""

    def __init__(
        self, cfg: SourceConfig, camera: str = "cam0", clock: Clock | None = None,
        max_pixels: int = MAX_DECODE_PIXELS,
    ) -> None:
        self.cfg = cfg
        self.camera = camera
        self.clock = clock or SystemClock()
        self.max_pixels = max_pixels
        self.stats = CaptureStats()
        self._files: list[Path] = []
        self._next = 0
        self._seq = 0
        self._finished = False
        self._pacer = _Pacer(cfg.fps, self.clock) if cfg.fps > 0 else None

    @property
    def finished(self) -> bool:
        return self._finished

    def open(self) -> None:
        folder = Path(self.cfg.path)
        if not folder.is_dir():
            raise CaptureError(f"image folder {folder} does not exist; check source.path")
        self._files = sorted(
            p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self._files:
            raise CaptureError(
                f"image folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        self._next = 0
        self.stats.connected = True
        if self._pacer is not None:
            self._pacer.restart()

    def read(self, timeout: float) -> Frame | None:
        while not self._finished:
            if self._next >= len(self._files):
                if not self.cfg.loop:
                    self._finished = True
                    self.stats.connected = False
                    return None
                self._next = 0
                if self._pacer is not None:
                    self._pacer.restart()
            if self._pacer is not None:
                due = self._pacer.due_index()
                if self._next < due:
                    # a photo folder is not a camera: late photos are still read, one after another,
                    # but the lag is visible as dropped=0 and a lower processed rate.
                    pass
                elif not self._pacer.wait_for(self._next, timeout):
                    return None
            path = self._files[self._next]
            self._next += 1
            t0 = time.perf_counter()
            try:
                image, _ = read_image(path, self.max_pixels)
            except ImageError as e:
                self.stats.errors += 1
                self.stats.last_error = f"cannot decode {path.name}"
                log.warning("skipping %s: %s", path, e)
                continue
            self._seq += 1
            self.stats.frames_in += 1
            self.stats.decode_ms = (time.perf_counter() - t0) * 1000
            return Frame(
                image=image, ts=self.clock.time(), mono=self.clock.monotonic(), seq=self._seq,
                camera=self.camera, scene=path.name,
            )
        return None

    def close(self) -> None:
        self.stats.connected = False


class PiCameraSource(_Source):  # pragma: no cover - needs a Raspberry Pi camera (tests marked `hardware`)
    """The Raspberry Pi camera through picamera2 (from apt: python3-picamera2)."""

    def __init__(self, cfg: SourceConfig, camera: str = "cam0", clock: Clock | None = None) -> None:
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError as e:
            raise CaptureError(
                "source.kind is picamera2 but the picamera2 module is not importable. On Raspberry Pi OS "
                "(64-bit): `sudo apt install python3-picamera2` and create the venv with "
                "`python3 -m venv --system-site-packages`; elsewhere use source.kind: opencv"
            ) from e
        self._cls = Picamera2
        self.cfg = cfg
        self.camera = camera
        self.clock = clock or SystemClock()
        self.stats = CaptureStats()
        self._cam: Any = None
        self._seq = 0
        self._last_sensor_ts: int | None = None
        self._frame_ns = 0
        self._backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self._retry_at = 0.0

    @property
    def finished(self) -> bool:
        return False

    def open(self) -> None:
        try:
            cam = self._cls()
            controls: dict[str, Any] = {}
            if self.cfg.fps > 0:
                self._frame_ns = int(1e9 / self.cfg.fps)
                controls["FrameDurationLimits"] = (self._frame_ns // 1000, self._frame_ns // 1000)
            # picamera2's "RGB888" is B, G, R in memory: OpenCV's order. Two buffers: the newest only.
            conf = cam.create_video_configuration(
                main={"size": (self.cfg.width, self.cfg.height), "format": "RGB888"},
                buffer_count=2, controls=controls,
            )
            cam.configure(conf)
            cam.start()
        except (IndexError, RuntimeError, OSError) as e:
            self.stats.connected = False
            raise CaptureError(
                f"Camera(s) not found or busy ({e}); check the ribbon cable, `rpicam-hello --list-cameras`, "
                "and that no other process holds the camera"
            ) from e
        self._cam = cam
        self.stats.connected = True
        self._backoff.reset()

    def read(self, timeout: float) -> Frame | None:
        if self._cam is None:
            wait = self._retry_at - self.clock.monotonic()
            if wait > 0:
                self.clock.sleep(min(wait, timeout))
                return None
            try:
                self.open()
                self.stats.reconnects += 1
            except CaptureError as e:
                self._fail(str(e))
                return None
        try:
            request = self._cam.capture_request(wait=timeout)
        except TimeoutError:
            return None
        except Exception as e:  # picamera2 raises plain exceptions on camera loss
            self._fail(f"capture failed: {e}")
            return None
        t0 = time.perf_counter()
        try:
            image = request.make_array("main")
            meta = request.get_metadata()
        finally:
            request.release()
        dropped = 0
        sensor_ts = meta.get("SensorTimestamp")
        if isinstance(sensor_ts, int):
            if self._last_sensor_ts is not None:
                period = self._frame_ns or int(meta.get("FrameDuration", 0)) * 1000
                if period > 0:
                    dropped = max(0, round((sensor_ts - self._last_sensor_ts) / period) - 1)
                    self.stats.dropped += dropped
            self._last_sensor_ts = sensor_ts
        self._seq += 1
        self.stats.frames_in += 1
        self.stats.decode_ms = (time.perf_counter() - t0) * 1000
        return Frame(
            image=np.ascontiguousarray(image[:, :, :3]), ts=self.clock.time(), mono=self.clock.monotonic(),
            seq=self._seq, camera=self.camera, dropped=dropped,
        )

    def _fail(self, why: str) -> None:
        self.close()
        self.stats.errors += 1
        self.stats.last_error = why
        delay = self._backoff.next_delay()
        self._retry_at = self.clock.monotonic() + delay
        log.warning("pi camera: %s; retrying in %.1f s", why, delay)

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            except Exception:  # best effort: the camera may already be gone
                log.debug("closing the pi camera failed", exc_info=True)
            self._cam = None
        self.stats.connected = False


def is_live(cfg: SourceConfig) -> bool:
    """A camera or a stream: it may be missing for a while (the daemon waits); a file or folder may not."""
    return cfg.kind in ("picamera2", "opencv")


def make_source(
    cfg: SourceConfig, camera: str = "cam0", clock: Clock | None = None, max_pixels: int = MAX_DECODE_PIXELS
) -> FrameSource:
    """The source that `source.kind` names (picamera2 is imported only here, only when asked for).

    `max_pixels` (`reader.max_pixels`) bounds what an image file may decode to."""
    if cfg.kind == "images":
        return ImageDirSource(cfg, camera, clock, max_pixels)
    if cfg.kind == "picamera2":
        return PiCameraSource(cfg, camera, clock)
    if cfg.kind == "video" and (_is_device_index(cfg.path) or _is_url(cfg.path)):
        raise CaptureError(f"source.kind video wants a file, not {cfg.path!r}; use source.kind: opencv")
    return VideoSource(cfg, camera, clock)


def open_with_retry(
    source: FrameSource, timeout_s: float, stop: threading.Event, clock: Clock | None = None
) -> None:
    """Open a source, retrying with backoff for up to `timeout_s` (a camera still booting); then raise."""
    clock = clock or SystemClock()
    deadline = clock.monotonic() + timeout_s
    backoff = Backoff(0.5, 5.0)
    while True:
        try:
            source.open()
            return
        except CaptureError as e:
            left = deadline - clock.monotonic()
            if left <= 0 or stop.is_set():
                raise
            delay = min(backoff.next_delay(), left)
            log.warning("%s; retrying in %.1f s", e, delay)
            stop.wait(delay)
