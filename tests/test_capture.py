"""Frame sources on real files: photo folders, video files (paced and unpaced), a flaky live camera."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from alprd.clock import Backoff
from alprd.config import MotionConfig, SourceConfig
from alprd.device.capture import ImageDirSource, VideoSource, make_source, open_with_retry
from alprd.device.motion import MotionGate
from alprd.errors import CaptureError
from alprd.types import Frame


class ManualClock:
    """A clock whose time only moves when told to (sleep advances it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


def _write_video(path: Path, photo: Path, frames: int, fps: float = 30.0) -> None:
    """A small clip panned across a real photo."""
    img = cv2.imread(str(photo))
    assert img is not None
    w, h = 320, 180
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for i in range(frames):
        x = (i * 7) % max(1, img.shape[1] - w)
        out.write(np.ascontiguousarray(img[0:h, x : x + w]))
    out.release()


def _photos(data_dir: Path, n: int) -> list[Path]:
    return sorted((data_dir / "us").glob("*.jpg"))[:n]


def test_image_dir_sorted_each_its_own_scene_and_skips_bad_files(tmp_path: Path, data_dir: Path) -> None:
    photos = _photos(data_dir, 3)
    for i, p in enumerate(reversed(photos)):
        (tmp_path / f"{i:02d}.jpg").symlink_to(p)
    (tmp_path / "01b.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    src = ImageDirSource(SourceConfig(kind="images", path=str(tmp_path)))
    src.open()
    frames = []
    while (f := src.read(0.1)) is not None:
        frames.append(f)
    assert src.finished
    assert [f.scene for f in frames] == ["00.jpg", "01.jpg", "02.jpg"]
    assert len({f.seq for f in frames}) == 3
    assert src.stats.errors == 1 and src.stats.frames_in == 3
    assert frames[0].image.shape[2] == 3


def test_image_dir_loop_and_missing_folder(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "a.jpg").symlink_to(_photos(data_dir, 1)[0])
    src = ImageDirSource(SourceConfig(kind="images", path=str(tmp_path), loop=True))
    src.open()
    assert [src.read(0.1) is not None for _ in range(3)] == [True, True, True]
    assert not src.finished
    with pytest.raises(CaptureError, match="does not exist"):
        ImageDirSource(SourceConfig(kind="images", path=str(tmp_path / "nope"))).open()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CaptureError, match="no images"):
        ImageDirSource(SourceConfig(kind="images", path=str(empty))).open()


def test_video_file_unpaced_reads_every_frame(tmp_path: Path, data_dir: Path) -> None:
    clip = tmp_path / "clip.avi"
    _write_video(clip, _photos(data_dir, 1)[0], 12)
    src = make_source(SourceConfig(kind="video", path=str(clip)))
    src.open()
    frames: list[Frame] = []
    while not src.finished:
        f = src.read(0.1)
        if f is not None:
            frames.append(f)
    assert len(frames) == 12 and src.stats.dropped == 0
    assert frames[0].image.shape == (180, 320, 3)
    assert frames[0].scene == ""


def test_video_file_paced_drops_late_frames_instead_of_queueing(tmp_path: Path, data_dir: Path) -> None:
    clip = tmp_path / "clip.avi"
    _write_video(clip, _photos(data_dir, 1)[0], 30)
    clock = ManualClock()
    src = VideoSource(SourceConfig(kind="video", path=str(clip), fps=10.0), clock=clock)
    src.open()
    got = []
    while not src.finished:
        f = src.read(1.0)
        if f is not None:
            got.append(f)
            clock.sleep(0.25)  # "processing" takes 2.5 frame periods
    assert src.stats.dropped > 0
    assert len(got) + src.stats.dropped == 30
    # no backlog: each delivered frame was at most one period late
    assert len(got) <= 13
    # each frame says how many were dropped just before it: what the pipeline counts against motion
    # (but the last few: the file ended before another frame came)
    assert src.stats.dropped - 3 <= sum(f.dropped for f in got) <= src.stats.dropped and got[0].dropped == 0
    assert max(f.dropped for f in got) >= 1 and src.stats.decode_ms > 0


def test_video_file_loop_restarts(tmp_path: Path, data_dir: Path) -> None:
    clip = tmp_path / "clip.avi"
    _write_video(clip, _photos(data_dir, 1)[0], 4)
    src = VideoSource(SourceConfig(kind="video", path=str(clip), loop=True))
    src.open()
    n = sum(1 for _ in range(12) if src.read(0.1) is not None)
    assert n >= 8 and not src.finished


def test_video_source_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"does not exist; check source.path"):
        VideoSource(SourceConfig(kind="video", path=str(tmp_path / "missing.mp4"))).open()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CaptureError, match="cannot open"):
        VideoSource(SourceConfig(kind="video", path=str(bad))).open()
    with pytest.raises(CaptureError, match=r"use source\.kind: opencv"):
        make_source(SourceConfig(kind="video", path="rtsp://cam/stream"))


def test_picamera2_off_pi_gives_actionable_error() -> None:
    try:
        import picamera2  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("picamera2 is installed here")
    with pytest.raises(CaptureError, match="apt install python3-picamera2"):
        make_source(SourceConfig(kind="picamera2"))


class FlakyCamera:
    """A capture device (OpenCV's interface) that delivers `good` frames, then fails."""

    def __init__(self, good: int, image: np.ndarray[Any, Any], clock: ManualClock) -> None:
        self.good = good
        self.clock = clock
        self.image = image
        self.released = False

    def isOpened(self) -> bool:
        return True

    def set(self, prop: int, value: float) -> bool:
        return True

    def get(self, prop: int) -> float:
        return 30.0

    def grab(self) -> bool:
        if self.good <= 0:
            return False
        self.good -= 1
        self.clock.sleep(1 / 30)  # a live camera makes the caller wait for the next frame
        return True

    def retrieve(self) -> tuple[bool, np.ndarray[Any, Any]]:
        return True, self.image

    def release(self) -> None:
        self.released = True


def test_live_source_reconnects_with_backoff_after_loss() -> None:
    clock = ManualClock()
    image = np.zeros((48, 64, 3), np.uint8)
    opened: list[FlakyCamera | None] = []
    plan: list[FlakyCamera | None] = [
        FlakyCamera(1, image, clock), None, None, FlakyCamera(10_000, image, clock),
    ]

    class Refused:
        def isOpened(self) -> bool:
            return False

        def release(self) -> None:
            pass

    def opener(target: str | int) -> Any:
        cam = plan.pop(0) if plan else None
        opened.append(cam)
        return cam if cam is not None else Refused()

    cfg = SourceConfig(
        kind="opencv", path="rtsp://user:secret@cam/stream", reconnect_min_s=1, reconnect_max_s=8
    )
    src = VideoSource(cfg, clock=clock, opener=opener)
    src.open()
    frames = 0
    for _ in range(60):
        f = src.read(0.5)
        frames += f is not None
        clock.sleep(0.04)
    assert frames >= 5
    assert src.stats.reconnects == 1
    assert src.stats.errors >= 3
    assert src.stats.connected
    assert "secret" not in src._describe()


def test_open_with_retry_gives_up_after_timeout(tmp_path: Path) -> None:
    src = VideoSource(SourceConfig(kind="video", path=str(tmp_path / "missing.avi")))
    with pytest.raises(CaptureError):
        open_with_retry(src, 0.3, threading.Event())


def test_backoff_doubles_with_jitter_and_caps() -> None:
    b = Backoff(1.0, 8.0)
    delays = [b.next_delay() for _ in range(6)]
    assert 0.5 <= delays[0] <= 1.0
    assert 4.0 <= delays[5] <= 8.0
    assert all(d <= 8.0 for d in delays)


def test_motion_gate_skips_static_scene_and_holds(data_dir: Path) -> None:
    img = cv2.imread(str(_photos(data_dir, 1)[0]))
    assert img is not None
    gate = MotionGate(MotionConfig(hold_frames=2))

    def frame(image: np.ndarray[Any, Any], seq: int, scene: str = "") -> Frame:
        return Frame(image=image, ts=float(seq), mono=float(seq), seq=seq, scene=scene)

    assert gate.wants(frame(img, 1))  # first frame: new scene
    assert gate.wants(frame(img, 2))  # hold
    assert gate.wants(frame(img, 3))
    assert not gate.wants(frame(img, 4))  # static: skipped
    moved = np.roll(img, 80, axis=1)
    assert gate.wants(frame(moved, 5))
    assert gate.wants(frame(img, 6, scene="other.jpg"))  # new scene always read
    roi_gate = MotionGate(MotionConfig(roi=(0, 0, 10, 10)))
    from alprd.types import Box

    assert roi_gate.inside(Box(2, 2, 4, 4), 100, 100)
    assert not roi_gate.inside(Box(50, 50, 4, 4), 100, 100)


def _street_with_car(data_dir: Path) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """A still 640x360 street (a real photo, blurred) and a real car-sized patch to move across it."""
    img = cv2.imread(str(_photos(data_dir, 1)[0]))
    assert img is not None
    street = cv2.GaussianBlur(cv2.resize(img, (640, 360)), (0, 0), 6)
    car = cv2.resize(img, (640, 360))[120:220, 200:330].copy()
    return street, car


def _at(street: np.ndarray[Any, Any], car: np.ndarray[Any, Any] | None, x: int,
        rng: np.random.Generator) -> np.ndarray[Any, Any]:
    out = street.astype(np.int16) + rng.integers(-3, 4, street.shape, dtype=np.int16)  # sensor noise
    if car is not None and 0 <= x <= street.shape[1] - car.shape[1]:
        out[150 : 150 + car.shape[0], x : x + car.shape[1]] = car
    return np.clip(out, 0, 255).astype(np.uint8)


def test_motion_gate_stops_reading_soon_after_the_car_left(data_dir: Path) -> None:
    street, car = _street_with_car(data_dir)
    rng = np.random.default_rng(1)
    gate = MotionGate(MotionConfig(hold_frames=10))
    wanted = []
    for i in range(90):  # 30 fps: the car crosses in 1 s, then 2 s of empty street
        image = _at(street, car if i < 30 else None, 10 + 16 * i, rng)
        wanted.append(gate.wants(Frame(image=image, ts=i / 30, mono=i / 30, seq=i + 1)))
    assert all(wanted[:30])
    # after the car: hold_frames, then at most one still window (0.25 s) until the street is background
    assert not any(wanted[30 + 10 + 8 + 2 :]), wanted.index(False)


def test_motion_gate_keeps_reading_a_car_creeping_in_at_30_fps(data_dir: Path) -> None:
    street, car = _street_with_car(data_dir)
    rng = np.random.default_rng(2)
    gate = MotionGate(MotionConfig(hold_frames=0))
    wanted = []
    for i in range(90):  # one working-scale pixel per frame: too little between two frames
        image = _at(street, car, 100 + 2 * i, rng)
        wanted.append(gate.wants(Frame(image=image, ts=i / 30, mono=i / 30, seq=i + 1)))
    assert sum(wanted) >= 0.9 * len(wanted), wanted
