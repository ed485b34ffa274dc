"""The pipeline's lanes: one hit per car (stitching within tracking.rehit_after_s, repeat after it),
noise, the closer look once per pass, drops while a car is in view, several cameras."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_daemon import Installed, ScriptedReader, make_hotlist, rd

from alprd.config import MatchingConfig, MotionConfig, ReaderConfig, TrackingConfig
from alprd.device.motion import MotionGate
from alprd.device.pipeline import CLOSER_AFTER_PASS_S, Pipeline
from alprd.device.track import Tracker
from alprd.privacy.hotlist import HotList
from alprd.read.grammar import vehicle_like
from alprd.read.imageio import read_image
from alprd.types import Box, Detection, Event, Frame, Hit, Image, Looks, Pass, PhotoResult, Read

BLANK = np.zeros((720, 1280, 3), np.uint8)


def sure(text: str, x: int) -> Read:
    """A read of a plate read well (`Read.confident`): it fits the grammar, at 0.9."""
    return dataclasses.replace(rd(text, x), grammar_ok=True)


def frame(seq: int, ts: float | None = None, camera: str = "cam0", dropped: int = 0,
          image: Image = BLANK) -> Frame:
    t = 1e9 + seq / 10 if ts is None else ts
    return Frame(image=image, ts=t, mono=t - 1e9, seq=seq, camera=camera, dropped=dropped)


def pipeline(reader: object, hot: HotList | None, rehit_after_s: float = 60.0, max_track_s: float = 60.0,
             motion: bool = False, **kw: object) -> Pipeline:
    tracking = TrackingConfig(close_after_frames=3, rehit_after_s=rehit_after_s, max_track_s=max_track_s)
    return Pipeline(reader, Tracker(tracking), MotionGate(MotionConfig(enabled=motion, hold_frames=0)),  # type: ignore[arg-type]
                    Installed(hot), MatchingConfig(min_agreeing_reads=2), **kw)  # type: ignore[arg-type]


def run(pipe: Pipeline, frames: Iterator[Frame] | list[Frame]) -> list[Event]:
    events: list[Event] = []
    for f in frames:
        events += pipe.step(f)
    return events + pipe.flush()


# --- one hit per car ---------------------------------------------------------------------------------


def hidden_car(photo: Image, plate: Box, hidden: range, frames: int = 24) -> Iterator[Image]:
    """The car passes (the view pans across the photo) while a truck hides it for `hidden` frames."""
    w = photo.shape[1]
    for k in range(frames):
        dx = round(0.15 * w * k / frames)
        view = np.ascontiguousarray(photo[:, dx : dx + int(0.85 * w)])
        if k in hidden:
            view = view.copy()
            x0 = max(0, plate.x - dx - plate.w * 2)
            view[:, x0 : x0 + plate.w * 5] = (60, 70, 80)  # the truck's side, floor to roof
        yield view


class Replay:
    """Plays back what the real reader read in each frame (the clip is read once, then replayed into
    pipelines with different settings)."""

    def __init__(self, results: list[PhotoResult]) -> None:
        self.model_hashes = {"replay": "0" * 64}
        self.results = results
        self.i = 0

    def read(self, image: Image, region: str | None = None, looks: Looks | None = None) -> PhotoResult:
        self.i += 1
        return self.results[self.i - 1]


def test_a_listed_car_hidden_for_a_few_frames_gives_one_hit(data_dir: Path) -> None:
    from alprd.read.reader import PlateReader

    rows = list(csv.DictReader((data_dir / "us" / "labels.csv").read_text().splitlines()))[:40:8]
    reader = PlateReader(ReaderConfig(region="us"))
    hot = make_hotlist({r["plate"]: "stolen" for r in rows})
    twice = split = 0
    for row in rows:
        image, _ = read_image(data_dir / "us" / row["file"])
        box = Box(*(int(row[k]) for k in "xywh"))
        results = [reader.read(v, "us") for v in hidden_car(image, box, range(8, 15))]
        if not all(any(row["plate"] == r.text for res in part for r in res.reads)
                   for part in (results[:8], results[15:])):
            continue  # the reader did not read this plate on both sides of the truck
        twice += 1
        frames = [frame(i + 1) for i in range(len(results))]
        # as the daemon runs: the two pieces of the pass are one car, one hit
        events = run(pipeline(Replay(results), hot, region="us"), frames)
        hits = [e for e in events if isinstance(e, Hit)]
        assert [(h.track.text, h.repeat) for h in hits] == [(row["plate"], False)], [
            e.track.text for e in events]
        # without the window, a hit per piece, the second one saying it is one
        again = [e for e in run(pipeline(Replay(results), hot, rehit_after_s=0, region="us"), frames)
                 if isinstance(e, Hit)]
        if len(again) == 2:
            split += 1
            assert [h.repeat for h in again] == [False, True]
    assert twice >= 3, "too few plates read before and after the truck for the test to say anything"
    assert split >= 1, "the truck never split a pass: the clip tests nothing"


def test_a_parked_listed_car_cut_into_passes_is_one_hit_and_a_return_after_the_window_a_repeat() -> None:
    hot = make_hotlist({"7ABC123": "stolen"})
    # 0-30 s: parked in view (max_track_s 10 cuts it in three); 30-100 s: gone; 100 s: back
    seen = [frame(i + 1, ts=1e9 + i) for i in range(40)]
    seen += [frame(101 + i, ts=1e9 + 100 + i) for i in range(3)]
    script = {i: [rd("7ABC123", 100)] for i in [*range(1, 31), 41, 42, 43]}
    events = run(pipeline(ScriptedReader(script), hot, max_track_s=10), seen)
    hits = [e for e in events if isinstance(e, Hit)]
    assert [(h.track.first_ts - 1e9, h.repeat) for h in hits] == [(0.0, False), (100.0, True)]
    assert all(h.track.camera == "cam0" for h in hits)


def test_an_unlisted_car_hidden_for_a_moment_is_counted_once_and_two_cars_twice() -> None:
    script = {1: [rd("5XYZ777", 100)], 2: [rd("5XYZ777", 110)], 8: [rd("5XYZ777", 400)],
              9: [rd("5XYZ777", 410)], 14: [rd("4ABC999", 100)], 15: [rd("4ABC999", 110)]}
    pipe = pipeline(ScriptedReader(script), None)
    events = run(pipe, [frame(i) for i in range(1, 20)])
    assert [e.track.text for e in events if isinstance(e, Pass)] == ["5XYZ777", "4ABC999"]
    assert pipe.lane("cam0").stitched == 1


def test_the_same_plate_on_two_cameras_is_a_hit_on_each() -> None:
    hot = make_hotlist({"7ABC123": "stolen"})
    script = {i: [rd("7ABC123", 100)] for i in range(1, 9)}
    pipe = pipeline(ScriptedReader(script), hot, camera="front")
    pipe.add_camera("rear", Tracker(TrackingConfig(close_after_frames=3)),
                    MotionGate(MotionConfig(enabled=False)))
    frames = [frame(i, camera="front" if i <= 4 else "rear") for i in range(1, 9)]
    hits = [e for e in run(pipe, frames) if isinstance(e, Hit)]
    assert sorted((h.track.camera, h.repeat) for h in hits) == [("front", False), ("rear", False)]
    with pytest.raises(KeyError):
        pipe.step(frame(9, camera="side"))


# --- noise --------------------------------------------------------------------------------------------


def us_vehicle(text: str, read_once: bool) -> bool:
    return vehicle_like(text, "us", read_once)


def test_reads_of_no_vehicle_are_noise_and_plates_are_passes() -> None:
    def passes_of(texts: list[str], reads: int) -> list[Pass]:
        script: dict[int, list[Read]] = {}
        for k, text in enumerate(texts):
            for j in range(reads):
                script[k * 10 + j + 1] = [rd(text, 100)]
        pipe = pipeline(ScriptedReader(script), None, vehicle=us_vehicle)
        events = run(pipe, [frame(i) for i in range(1, 10 * len(texts) + 1)])
        return [e for e in events if isinstance(e, Pass)]

    junk, plates = ["IH", "L7", "21", "B4"], ["7ABC123", "ANW2529", "5TZA419", "8FV480"]
    assert all(p.noise for p in passes_of(junk, 3))  # short, in no plate format: badges, fragments
    assert not any(p.noise for p in passes_of(plates, 3))
    assert not any(p.noise for p in passes_of(plates, 1))  # read once: still a plate format
    once = passes_of(["MTTM700", "L700G", "IGH1G"], 1)  # the demo street's road markings, read once
    assert len(once) == 3 and all(p.noise for p in once)
    assert not any(p.noise for p in passes_of(["MTTM700", "L700G", "IGH1G"], 3))  # read again and again


def test_vehicle_like_follows_the_region() -> None:
    assert vehicle_like("AB12CDE", "eu", True) and vehicle_like("ABC1D23", "br", True)
    assert not vehicle_like("AB1", "br") and not vehicle_like("ABCDEFGHJ", "br", True)
    assert vehicle_like("ABCD", "us") and not vehicle_like("ABC", "us")


def test_a_photo_is_read_once_by_nature_so_one_read_is_no_sign_of_noise() -> None:
    """A folder of photos (each its own scene) reads every car once: a vanity plate is a car there,
    while one read in a video stream of a text in no plate format is not."""
    script = {1: [rd("MTTM700", 100)]}
    for scene, noise in (("photo1.jpg", False), ("", True)):
        pipe = pipeline(ScriptedReader(script), None, vehicle=us_vehicle)
        f = frame(1)
        events = run(pipe, [Frame(image=f.image, ts=f.ts, mono=f.mono, seq=1, scene=scene)])
        assert [(type(e), e.noise) for e in events if isinstance(e, Pass)] == [(Pass, noise)], scene


# --- the closer look, and frames dropped while a car is in view ------------------------------------------


class LookingReader:
    """Reads nothing well; takes the closer look whenever it may, and notes which frames could."""

    def __init__(self, script: dict[int, list[Read]]) -> None:
        self.model_hashes = {"looking": "0" * 64}
        self.script = script
        self.seq = 0
        self.closer: list[int] = []
        self.sizes: list[int | None] = []

    def read(self, image: Image, region: str | None = None, looks: Looks | None = None) -> PhotoResult:
        self.seq += 1
        looks = looks or Looks()
        self.sizes.append(looks.size)
        if looks.closer:
            self.closer.append(self.seq)
        return PhotoResult(tuple(self.script.get(self.seq, [])), ms=1.0,
                           stage_ms={"closer": 5.0} if looks.closer else {})


def test_the_closer_look_runs_once_per_pass_and_never_while_a_pass_is_open() -> None:
    # frames 1-3: a car comes, nothing readable; 4-8: its pass (closed 3 frames after its last read);
    # 9-14: nothing readable; 15-24: the street is still; then motion again
    script = {i: [sure("7ABC123", 100 + 10 * i)] for i in range(4, 9)}
    reader = LookingReader(script)
    pipe = pipeline(reader, None, motion=True, closer_look="pass", size=480)
    rng = np.random.default_rng(1)
    still = np.full((360, 640, 3), 90, np.uint8)
    images = [rng.integers(0, 255, (360, 640, 3), dtype=np.uint8) for _ in range(14)] + [still] * 10
    images += [rng.integers(0, 255, (360, 640, 3), dtype=np.uint8) for _ in range(3)]
    lane = pipe.lane("cam0")
    first_after_still = 0
    for i, im in enumerate(images):
        skipped = lane.skipped
        pipe.step(frame(i + 1, image=im))
        if i >= 24 and not first_after_still and lane.skipped == skipped:
            first_after_still = reader.seq
    assert lane.processed == 14 + (24 - 14 - lane.skipped) + 3 and lane.skipped >= 5
    # once before the pass, not while it is open nor in the second after it closed (the car that
    # left: frames 12-14), once when the motion came back
    assert reader.closer == [1, first_after_still]
    assert set(reader.sizes) == {480}  # the camera's detector size
    every = LookingReader(script)
    run(pipeline(every, None, closer_look="frame"), [frame(i) for i in range(1, 15)])
    assert every.closer == list(range(1, 15))


def test_in_unbroken_motion_the_closer_look_comes_back_a_second_after_a_pass() -> None:
    """Busy traffic: the street never goes still between cars. A second after a pass closed, a
    frame that still reads nothing well gets the closer look (a distant next car), once."""
    script = {i: [sure("7ABC123", 100 + 10 * i)] for i in range(4, 9)}
    reader = LookingReader(script)
    pipe = pipeline(reader, None, motion=True, closer_look="pass")
    for i in range(1, 41):  # 4 s of motion at 10 fps (a block moving across), the pass closes at frame 11
        image = np.zeros((360, 640, 3), np.uint8)
        image[100:260, 15 * i : 15 * i + 80] = 255
        pipe.step(frame(i, image=image))
    assert pipe.lane("cam0").skipped == 0
    closed_ts = frame(11).ts
    later = [k for k in reader.closer if k > 11]
    assert reader.closer[0] == 1 and len(later) == 1, reader.closer
    assert frame(later[0]).ts - closed_ts >= CLOSER_AFTER_PASS_S > frame(later[0] - 1).ts - closed_ts


def test_frames_dropped_next_to_motion_count_against_the_read_share() -> None:
    pipe = pipeline(ScriptedReader({}), None, motion=True)
    rng = np.random.default_rng(2)
    still = np.full((360, 640, 3), 90, np.uint8)
    # a still street (its first frame is read: a new scene): drops there are no car's
    frames = [frame(1, image=still), frame(2, image=still), frame(3, image=still, dropped=4)]
    frames += [frame(4 + i, image=rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), dropped=2)
               for i in range(6)]
    run(pipe, frames)
    lane = pipe.lane("cam0")
    assert lane.dropped == 16 and lane.dropped_in_motion == 12
    assert lane.processed == 7 and lane.read_share() == round(7 / 19, 4)


def test_only_the_region_of_interest_is_read_and_boxes_come_back_in_frame_pixels() -> None:
    seen: list[tuple[int, ...]] = []

    class CropReader(ScriptedReader):
        def read(self, image: Image, region: str | None = None, looks: Looks | None = None) -> PhotoResult:
            seen.append(image.shape)
            return super().read(image, region, looks)

    hot = make_hotlist({"7ABC123": "stolen"})
    reader = CropReader({i: [rd("7ABC123", 20 + i)] for i in range(1, 4)})  # boxes in the crop's pixels
    tracking = TrackingConfig(close_after_frames=3)
    gate = MotionGate(MotionConfig(enabled=False, roi=(100, 200, 640, 300)))
    pipe = Pipeline(reader, Tracker(tracking), gate, Installed(hot), MatchingConfig())
    hits = [e for e in run(pipe, [frame(i) for i in range(1, 4)]) if isinstance(e, Hit)]
    assert seen == [(300, 640, 3)] * 3  # the detectors see 640 x 300, not the 1280 x 720 frame
    assert [h.track.box for h in hits] == [Box(100 + 20 + 1, 200 + 100, 80, 40)]


# --- the near look: a pass's plate read where it should be; the whole frame now and then -----------


def _view(photo: Image, plate: Box, k: int, size: tuple[int, int] = (640, 720)) -> Image:
    """A `size` window of the photo with its plate in the middle, panned 5 px per frame `k`."""
    x0 = plate.x + plate.w / 2 - size[0] / 2 + 5 * k
    y0 = plate.y + plate.h / 2 - size[1] / 2
    m = np.float32([[1, 0, -x0], [0, 1, -y0]])
    view = cv2.warpAffine(photo, m, size, borderMode=cv2.BORDER_CONSTANT, borderValue=(110, 110, 110))
    return np.asarray(view, dtype=np.uint8)


def two_cars(a: tuple[Image, Box], b: tuple[Image, Box], enters: int, frames: int) -> Iterator[Image]:
    """Car A passes on the left from the first frame; car B comes into the right half at `enters`,
    while A's pass is open."""
    empty = np.full((720, 640, 3), 110, np.uint8)
    for k in range(frames):
        yield np.hstack([_view(*a, k), _view(*b, k - enters) if k >= enters else empty])


def test_a_car_entering_beside_a_pass_read_near_is_found_by_the_whole_frame_reads(data_dir: Path) -> None:
    """While a pass is open the reader looks near its plate (`Looks.near`), and reads the whole frame
    every `full_read_every`-th frame: a second car coming into view meanwhile gets its pass too.
    Most frames are read near only: the whole frame's detectors run on few."""
    from alprd.read.reader import PlateReader

    reader = PlateReader(ReaderConfig(region="us"))
    rows = [r for r in csv.DictReader((data_dir / "us" / "labels.csv").read_text().splitlines())
            if r["file"].startswith("wts-lg") and int(r["w"]) >= 90]
    cars = []
    for row in rows:
        image, _ = read_image(data_dir / "us" / row["file"])
        box = Box(*(int(row[k]) for k in "xywh"))
        # a car this test can use: read alone in its window at the start and the end of its pass
        if all(any(r.text == row["plate"] for r in reader.read(_view(image, box, k), "us").reads)
               for k in (0, 15)):
            cars.append((row["plate"], (image, box)))
    assert len(cars) >= 4, [c[0] for c in cars]
    missed = pairs = 0
    for (plate_a, a), (plate_b, b) in zip(cars[0::2], cars[1::2], strict=False):
        pipe = pipeline(reader, None, region="us", closer_look="pass", full_read_every=4)
        texts = {e.track.text for e in run(pipe, (frame(k + 1, image=im) for k, im in
                                                  enumerate(two_cars(a, b, enters=6, frames=24))))
                 if isinstance(e, Pass)}
        assert {plate_a, plate_b} <= texts, (plate_a, plate_b, texts)
        stages = pipe.timer.summary()
        assert stages["near"]["n"] >= 12 and stages["detect"]["n"] <= 12, stages
        # never the whole frame while a pass is open: B is read only if A's near look fails
        blind = pipeline(reader, None, region="us", closer_look="pass", full_read_every=1000)
        texts = {e.track.text for e in run(blind, (frame(k + 1, image=im) for k, im in
                                                   enumerate(two_cars(a, b, enters=6, frames=24))))
                 if isinstance(e, Pass)}
        missed += plate_b not in texts
        pairs += 1
    assert missed >= 1, f"B found in all {pairs} clips without whole reads: the clip tests nothing"


class FallbackReader:
    """Records which looks each frame allowed; where told, detects a plate that reads well (`read`)
    or one that reads as nothing (`junk`: blur, lettering, a plate too far to read)."""

    def __init__(self, read: set[int], junk: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.model_hashes = {"fallback": "0" * 64}
        self.found, self.junk = read, junk
        self.seq = 0
        self.fallback: list[bool] = []
        self.closer: list[bool] = []

    def read(self, image: Image, region: str | None = None, looks: Looks | None = None) -> PhotoResult:
        self.seq += 1
        looks = looks or Looks()
        self.fallback.append(looks.fallback)
        self.closer.append(looks.closer)
        reads: tuple[Read, ...] = ()
        if self.seq in self.found:
            reads = (sure("7ABC123", 10 + self.seq),)
        elif self.seq in self.junk:
            reads = (rd("L25", 10, conf=0.05),)
        stages = {"detect": 1.0, **({"closer": 1.0} if looks.closer else {})}
        found = tuple(Detection(r.box, 0.8) for r in reads)
        return PhotoResult(reads, ms=1.0, stage_ms=stages, detections=found)


def test_on_an_empty_street_the_fallback_detector_reads_every_few_frames() -> None:
    """Frames in which no plate read well: the fallback reads every empty_fallback_every-th of them
    (frames 2-5 detect only what reads as nothing: a blurred street, a sign); a plate read well
    (frame 8) starts the count again, so the frame after it gets the fallback."""
    reader = FallbackReader(read={8}, junk={2, 3, 4, 5})
    run(pipeline(reader, None, empty_fallback_every=3), [frame(i) for i in range(1, 16)])
    assert reader.fallback == [True, False, False, True, False, False, True,
                               False, True, False, False, True, False, False, True]
    every = FallbackReader(read=set())
    run(pipeline(every, None), [frame(i) for i in range(1, 6)])
    assert all(every.fallback)


def test_the_closer_look_is_rationed_with_the_fallback_and_kept_off_by_passes_that_read_well() -> None:
    """The closer look is the accurate detector at a larger size: on frames where the fallback is
    rationed away, it is too. A pass of reads that read as nothing (a plate too far to read) does not
    keep it away: that is the plate it is for."""
    # frames 1-3: a car reads well; 4-30: what reads as nothing (a plate too far to read) while its
    # pass stays open; the car's pass closes at frame 6
    reader = FallbackReader(read={1, 2, 3}, junk=set(range(4, 31)))
    run(pipeline(reader, None, closer_look="pass", empty_fallback_every=3), [frame(i) for i in range(1, 31)])
    looked = [i + 1 for i, c in enumerate(reader.closer) if c]
    assert all(reader.fallback[i - 1] for i in looked), looked
    # before the car, then once a second after its pass closed, although the far plate's pass is open
    assert len(looked) == 2 and looked[0] == 1 and frame(looked[1]).ts - frame(6).ts >= CLOSER_AFTER_PASS_S
    sure = FallbackReader(read=set(range(1, 20)))
    run(pipeline(sure, None, closer_look="pass"), [frame(i) for i in range(1, 8)])
    assert sure.closer == [True] + [False] * 6  # a pass that reads well is open from frame 1
