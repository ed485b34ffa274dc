"""`alprd selftest`: what an installer runs on the device before trusting it.

Every shipped model is loaded and SHA-256 checked and runs one inference; then the whole reader reads
a plate this module renders itself (so the check needs no photo on the device). With a config, the
files the daemon will need are checked too: key files and their modes, the storage folder and its
SQLite database, the installed hot-list bundle. Each check is one line ending in OK, FAIL or SKIP;
nothing is written except a probe file in the storage folder, removed at once.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import Config, ReaderConfig, load_config
from .errors import AlprdError, ConfigError
from .privacy.keys import UNIT_PATHS, check_key_files, credential_source
from .types import Image

if TYPE_CHECKING:
    from .read.reader import PlateReader

OK, FAIL, SKIP = "OK", "FAIL", "SKIP"

PLATE_TEXT = "KXW4736"
"""Rendered by the read check. No O/0, I/1, Z/2, S/5 or B/8 pairs: a look-alike swap there would be
a reader quirk, not a broken install."""


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str
    detail: str

    def line(self) -> str:
        return f"{self.name:<20} {self.status:<4}  {self.detail}"


# --- the plate ---------------------------------------------------------------------------------


def render_plate(text: str = PLATE_TEXT, width: int = 960, height: int = 540, plate_w: int = 240) -> Image:
    """A car-park-like scene: dark text on a white, black-rimmed plate on a grey car on grey ground."""
    import cv2

    img = np.full((height, width, 3), 128, np.uint8)
    plate_h = plate_w // 2
    x0, y0 = (width - plate_w) // 2, int(height * 0.6)
    # the car's rear around the plate, so the plate is a bright patch on a darker body
    cv2.rectangle(img, (x0 - plate_w, y0 - 2 * plate_h), (x0 + 2 * plate_w, height - 1), (70, 70, 70), -1)
    cv2.rectangle(img, (x0, y0), (x0 + plate_w, y0 + plate_h), (255, 255, 255), -1)
    cv2.rectangle(img, (x0, y0), (x0 + plate_w, y0 + plate_h), (40, 40, 40), max(2, plate_w // 100))
    font = cv2.FONT_HERSHEY_DUPLEX
    (tw, _), _ = cv2.getTextSize(text, font, 1.0, 2)
    scale = plate_w * 0.86 / tw
    thick = max(2, round(plate_w / 40 * scale / 1.5))
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    org = (x0 + (plate_w - tw) // 2, y0 + (plate_h + th) // 2)
    cv2.putText(img, text, org, font, scale, (30, 30, 30), thick, cv2.LINE_AA)
    return img


# --- checks --------------------------------------------------------------------------------------


def _platform() -> Check:
    versions = [f"Python {platform.python_version()}"]
    for module, label in (("onnxruntime", "onnxruntime"), ("numpy", "numpy"), ("cv2", "OpenCV")):
        try:
            versions.append(f"{label} {__import__(module).__version__}")
        except ImportError as e:
            return Check("platform", FAIL, f"cannot import {module}: {e}")
    features = f"; cpu features: {' '.join(_arm_features())}" if platform.machine() == "aarch64" else ""
    return Check("platform", OK, f"{platform.machine()} {_cpu_model()}, " + ", ".join(versions) + features)


# Linux arm64 HWCAP/HWCAP2 bits (asm/hwcap.h) that decide which kernels numpy, OpenCV and onnxruntime
# pick: a Pi 4 (Cortex-A72) has none of atomics/asimddp/i8mm and no crypto extension (aes/sha/pmull).
_HWCAP = {1: "asimd", 3: "aes", 4: "pmull", 5: "sha1", 6: "sha2", 7: "crc32", 8: "atomics", 10: "asimdhp",
          12: "asimdrdm", 15: "lrcpc", 20: "asimddp", 22: "sve"}
_HWCAP2 = {1: "sve2", 13: "i8mm", 14: "bf16"}


def _arm_features() -> list[str]:
    """What the kernel (or qemu) tells this process it may execute, from the ELF auxiliary vector."""
    try:
        raw = Path("/proc/self/auxv").read_bytes()
    except OSError:
        return ["(unknown: no /proc/self/auxv)"]
    words = np.frombuffer(raw[: len(raw) // 16 * 16], dtype=np.uint64).reshape(-1, 2)
    aux = {int(k): int(v) for k, v in words}
    names = [n for bit, n in _HWCAP.items() if aux.get(16, 0) >> bit & 1]
    names += [n for bit, n in _HWCAP2.items() if aux.get(26, 0) >> bit & 1]
    return names or ["(none of the SIMD/crypto extensions)"]


def _cpu_model() -> str:
    """The board (Raspberry Pi's `Model` line) or CPU name, as /proc/cpuinfo tells it."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "(no /proc/cpuinfo)"
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    if "Model" in fields:
        return fields["Model"]
    if "model name" in fields:
        return fields["model name"]
    if "CPU part" in fields:
        return f"ARM part {fields['CPU part']}"
    return "(unknown CPU)"


def _dummy_input(session: Any, contract: Any) -> dict[str, Any]:
    """One plausible input per model input: a fixed random image, normalised as the contract says."""
    from .read.onnx import normalise

    feeds: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for inp in session.get_inputs():
        if inp.type != "tensor(float)" or len(inp.shape) != 4:
            raise AlprdError(f"input {inp.name} is {inp.type} {inp.shape}; selftest only feeds NCHW float")
        _, c, h, w = inp.shape
        # Dynamic sizes: as small as the contract allows, rounded up to its padding multiple. One
        # inference proves the kernels run; under emulation (CI's Pi smoke test) size is minutes.
        multiple = int(contract.input.get("pad_multiple", 1))
        if not isinstance(h, int):
            h = -(-int(contract.input.get("height", 64)) // multiple) * multiple
        if not isinstance(w, int):
            w = -(-int(contract.input.get("min_width", 64)) // multiple) * multiple
        channels = c if isinstance(c, int) else 3
        image = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        feeds[inp.name] = normalise(image, contract)
    return feeds


def model_checks(models_dir: Path, threads: int = 1) -> Iterator[Check]:
    """Every `*.json` contract in `models_dir`: SHA-256, load, one inference with finite outputs."""
    from .read.onnx import load_contract, open_session

    contracts = sorted(models_dir.glob("*.json"))
    if not contracts:
        yield Check(
            "models", FAIL, f"no model contracts (*.json) in {models_dir}: reinstall or fix reader.models_dir"
        )
        return
    for cpath in contracts:
        name = f"model {cpath.stem}"
        try:
            contract = load_contract(models_dir, cpath.stem)
            t0 = time.perf_counter()
            session = open_session(contract, threads)
            t1 = time.perf_counter()
            outputs = session.run(None, _dummy_input(session, contract))
            t2 = time.perf_counter()
        except AlprdError as e:
            yield Check(name, FAIL, str(e))
            continue
        except Exception as e:  # onnxruntime's own errors are untyped
            yield Check(name, FAIL, f"inference failed: {type(e).__name__}: {e}")
            continue
        bad = [i for i, o in enumerate(outputs) if not np.all(np.isfinite(np.asarray(o, dtype=np.float64)))]
        if bad:
            yield Check(name, FAIL, f"output {bad[0]} holds NaN or infinity: model or CPU maths broken")
            continue
        shapes = " ".join("x".join(map(str, np.shape(o))) for o in outputs)
        yield Check(
            name,
            OK,
            f"sha256 {contract.sha256[:12]}… verified, load {(t1 - t0) * 1000:.0f} ms, "
            f"1 inference {(t2 - t1) * 1000:.0f} ms -> {shapes}",
        )


def read_check(reader_cfg: ReaderConfig, text: str = PLATE_TEXT) -> tuple[Check, PlateReader | None]:
    """The whole reader (detector, line finder, recognizer, grammar) on a plate rendered here.

    Returns the loaded reader too (None if it could not load), for reading the user's own photos."""
    from .read.reader import PlateReader

    reader = None
    try:
        t0 = time.perf_counter()
        reader = PlateReader(reader_cfg)
        t1 = time.perf_counter()
        result = reader.read(render_plate(text), region="auto")
        t2 = time.perf_counter()
    except AlprdError as e:
        return Check("read", FAIL, str(e)), reader
    except Exception as e:  # anything else here is a broken install, reported as such
        return Check("read", FAIL, f"{type(e).__name__}: {e}"), reader
    timing = f"load {(t1 - t0) * 1000:.0f} ms, read {(t2 - t1) * 1000:.0f} ms"
    if not result.reads:
        return Check("read", FAIL, f"no plate found on the rendered {text} plate ({timing})"), reader
    best = result.reads[0]
    if best.text != text:
        detail = f"rendered {text}, read {best.text!r} ({best.confidence:.2f}; {timing})"
        return Check("read", FAIL, detail), reader
    return Check("read", OK, f"rendered plate read as {best.text} ({best.confidence:.2f}; {timing})"), reader


def photo_check(reader: PlateReader | None, path: str) -> tuple[Check, dict[str, Any]]:
    """Read one of the user's photos (a frame from this camera); also returns `alprd read`'s JSON for it."""
    from .read.imageio import read_image
    from .read.report import plate_json

    name = f"photo {Path(path).name}"
    if reader is None:
        return Check(name, FAIL, "the reader did not load (see above)"), {"file": path, "error": "no reader"}
    t0 = time.perf_counter()
    try:
        image, scale = read_image(path)
        result = reader.read(image)
    except AlprdError as e:
        return Check(name, FAIL, str(e)), {"file": path, "error": str(e)}
    ms = (time.perf_counter() - t0) * 1000
    plates = [plate_json(r, scale) for r in result.reads]
    texts = ", ".join(f"{p['text']} ({p['confidence']:.2f})" for p in plates) or "no plate found"
    return Check(name, OK, f"{texts}; {ms:.0f} ms"), {"file": path, "ms": round(ms, 1), "plates": plates}


BENCH_SIZE = (1920, 1080)
"""The frame size the bench reads: a 1080p camera's, the daemon's default capture size."""


def bench_checks(reader: PlateReader | None, reads: int, photos: Sequence[str] = ()) -> Iterator[Check]:
    """This device's ms per read, with the daemon's reader: a 1080p frame with a plate, the same
    frame read by the near look (a window around the plate, as while its pass is open: most of a
    passing car's frames), one of an empty street (a motion frame without a readable plate: the
    fast detector and the fallback both run), the closer look that the daemon adds once per pass,
    and each photo given. The daemon reads a camera's motion frames as fast as these allow and
    drops the rest (`read_share` in metrics; docs/pi-performance.md says what to change when it is
    too low)."""
    from .read.imageio import read_image
    from .types import Looks

    if reader is None:
        yield Check("bench", FAIL, "the reader did not load (see above)")
        return
    w, h = BENCH_SIZE
    plate = render_plate(PLATE_TEXT, w, h, 300)
    street = render_plate(PLATE_TEXT, w, h, 300)
    street[h // 2 :] = 128  # the car is gone: nothing to read
    frames: list[tuple[str, Image, Looks]] = [("bench plate", plate, Looks(closer=False))]
    found = reader.read(plate, looks=Looks(closer=False)).reads
    if found:
        frames.append(("bench near look", plate, Looks(closer=False, near=(found[0].box,))))
    frames += [
        ("bench no plate", street, Looks(closer=False)),
        ("bench closer look", street, Looks(closer=True)),
    ]
    for path in photos:
        try:
            frames.append((f"bench {Path(path).name}", read_image(path)[0], Looks(closer=False)))
        except AlprdError as e:
            yield Check(f"bench {Path(path).name}", FAIL, str(e))
    for name, image, looks in frames:
        reader.read(image, looks=looks)  # the first read of a new size plans its kernels
        ms = []
        for _ in range(reads):
            t0 = time.perf_counter()
            reader.read(image, looks=looks)
            ms.append((time.perf_counter() - t0) * 1000)
        ms.sort()
        p50, p95 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.95))]
        hi, wi = image.shape[:2]
        yield Check(name, OK, f"{wi}x{hi}: p50 {p50:.1f} ms, p95 {p95:.1f} ms per read over {reads} reads "
                              f"(up to {1000 / p50:.1f} frames read per second; detector threads "
                              f"{reader.detector_threads})")


def key_checks(cfg: Config, units: tuple[Path, ...] = UNIT_PATHS) -> Iterator[Check]:
    for k in check_key_files(cfg, units):
        if k.error:
            yield Check(f"key {k.key}", FAIL, f"{k.error}{k.via}")
            continue
        mode = f"mode {k.path.stat().st_mode & 0o777:04o}" if k.private else "public"
        yield Check(f"key {k.key}", OK, f"{k.path} ({mode}){k.via}")


def storage_check(cfg: Config) -> Check:
    from .store import DB_NAME

    folder = cfg.storage.dir
    if not folder.is_dir():
        parent = next((p for p in folder.parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK):
            return Check("storage", OK, f"{folder} does not exist yet; {parent} lets this user create it")
        return Check("storage", FAIL, f"{folder} does not exist and {parent} is not writable by this user")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".selftest-"):
            pass
    except OSError as e:
        return Check("storage", FAIL, f"{folder} is not writable by this user: {e.strerror}")
    db = folder / DB_NAME
    if not db.exists():
        return Check("storage", OK, f"{folder} writable; no database yet (created at first start)")
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)
        try:
            result = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as e:
        return Check("storage", FAIL, f"{db}: cannot check: {e}")
    if result != ["ok"]:
        return Check("storage", FAIL, f"{db}: integrity_check: {'; '.join(result[:3])}")
    return Check("storage", OK, f"{folder} writable; {db.name} passes integrity_check")


def hotlist_check(cfg: Config, units: tuple[Path, ...] = UNIT_PATHS) -> Check:
    from .privacy.hotlist import verify_bundle
    from .privacy.keys import load_list_key, load_signing_pub

    bundle = cfg.hotlist.bundle
    if not bundle.exists():
        return Check("hotlist", SKIP, f"no bundle at {bundle} yet (install one: alprd hotlist install)")
    if cfg.hotlist.key_source == "hq":
        return Check("hotlist", SKIP, "hotlist.key_source hq: the list key exists only in the daemon's RAM")
    try:
        pub = load_signing_pub(credential_source(cfg.hotlist.signing_pub, units)[0])
        key = load_list_key(credential_source(cfg.hotlist.list_key, units)[0])
        manifest, _ = verify_bundle(bundle.read_bytes(), pub, key, datetime.now(UTC))
    except AlprdError as e:
        return Check("hotlist", FAIL, f"{bundle}: {e}")
    except OSError as e:
        return Check("hotlist", FAIL, f"{bundle}: cannot read: {e.strerror}")
    if manifest.list_id != cfg.hotlist.list_id:
        return Check("hotlist", FAIL, f"{bundle}: list {manifest.list_id!r}, but hotlist.list_id is "
                                      f"{cfg.hotlist.list_id!r}: the daemon refuses it")
    return Check(
        "hotlist",
        OK,
        f"{bundle}: signature and decryption verified, version {manifest.version}, "
        f"expires {manifest.expires:%Y-%m-%d %H:%M}Z",
    )


def config_check(path: Path) -> tuple[Check, Config | None]:
    try:
        cfg = load_config(path)
    except ConfigError as e:
        return Check("config", FAIL, "; ".join(e.problems) or str(e)), None
    from .device.preflight import preflight

    # key files have their own lines below
    problems = preflight(cfg, path, keys=False)
    if problems:
        return Check("config", FAIL, "; ".join(problems)), cfg
    return Check("config", OK, f"{path} valid, files it names exist"), cfg


def run(
    config_path: Path | None = None,
    models_dir: Path | None = None,
    emit: Callable[[Check], None] | None = None,
    photos: Sequence[str] = (),
    photo_json: Callable[[dict[str, Any]], None] | None = None,
    bench: int = 0,
) -> list[Check]:
    """Run every check, passing each to `emit` as it completes (slow CPUs show progress).

    `photos` are read with the same loaded reader (one model load: on slow CPUs that is most of
    the time); `photo_json` receives each one's `alprd read` JSON object. `bench` > 0 times that
    many reads per bench frame (`bench_checks`)."""
    checks: list[Check] = []

    def add(check: Check) -> None:
        checks.append(check)
        if emit is not None:
            emit(check)

    add(_platform())
    cfg: Config | None = None
    if config_path is not None:
        check, cfg = config_check(config_path)
        add(check)
    reader_cfg = cfg.reader if cfg is not None else ReaderConfig()
    if models_dir is not None:
        reader_cfg = reader_cfg.model_copy(update={"models_dir": models_dir})
    for check in model_checks(reader_cfg.models_dir, reader_cfg.threads):
        add(check)
    check, reader = read_check(reader_cfg)
    add(check)
    for path in photos:
        check, obj = photo_check(reader, path)
        add(check)
        if photo_json is not None:
            photo_json(obj)
    if bench > 0:
        for check in bench_checks(reader, bench, photos):
            add(check)
    if cfg is not None:
        for check in key_checks(cfg):
            add(check)
        add(storage_check(cfg))
        add(hotlist_check(cfg))
    return checks
