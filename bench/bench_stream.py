"""Daemon stream benchmark: a 1080p 30 fps video made of real photos, replayed at camera pace.

    .venv/bin/python bench/bench_stream.py [--photos 12] [--threads 1]

Each real photo from ../shared/data/plates/us, scaled to 1920x1080, is shown for 1 s while the view
pans across it (a car passing), then held still for 2 s with sensor noise (an empty street: what the
motion gate is for). The daemon reads it with `source.fps: 30` (late frames dropped, as with a live
camera), motion gating on, every photo's plate on the hot list, against a local mosquitto; a
subscriber timestamps hits. Hit latency runs from the capture of the frame whose read decided the hit
(`ts` in the hit) to its arrival at the subscriber. Prints processed fps, dropped frames, latency
p50/p95 and peak RSS as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "plates" / "us"
sys.path.insert(0, str(ROOT / "tests"))


def make_video(
    path: Path, photos: list[Path], seconds_each: float = 1.0, still_s: float = 2.0, fps: int = 30
) -> int:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (1920, 1080))
    rng = np.random.default_rng(0)
    n = 0
    for p in photos:
        img = cv2.imread(str(p))
        if img is None:
            continue
        big = cv2.resize(img, (2112, 1188), interpolation=cv2.INTER_LINEAR)  # 10% margin to pan in
        steps = int(seconds_each * fps)
        view = big[54 : 54 + 1080, :1920]
        for k in range(steps):
            dx = int((big.shape[1] - 1920) * k / max(1, steps - 1))
            view = np.ascontiguousarray(big[54 : 54 + 1080, dx : dx + 1920])
            out.write(view)
            n += 1
        still = cv2.GaussianBlur(view, (0, 0), 8)  # the car has gone: a blurred, static street
        for _ in range(int(still_s * fps)):
            noise = rng.normal(0, 2.0, still.shape)
            out.write(np.clip(still + noise, 0, 255).astype(np.uint8))
            n += 1
    out.release()
    return n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model")
    args = ap.parse_args()
    import csv
    from datetime import UTC, datetime, timedelta

    from conftest import Mosquitto, Subscriber  # the test suite's broker fixture, reused

    from alprd.config import Config
    from alprd.daemon import assemble, privacy_settings, rss_mb
    from alprd.hotlist import HotListInstaller, entries_from_rows, pack_bundle
    from alprd.keys import generate_agency_keys, load_list_key, load_signing_key, load_signing_pub
    from alprd.store import Store

    rows = list(csv.DictReader((DATA / "labels.csv").open()))[: args.photos]
    tmp = Path(tempfile.mkdtemp(prefix="alprd-bench-"))
    try:
        video = tmp / "stream.avi"
        frames = make_video(video, [DATA / r["file"] for r in rows])
        keys = tmp / "keys"
        generate_agency_keys(keys)
        entries = entries_from_rows([{"plate": r["plate"], "reason": "bench"} for r in rows])
        bundle = pack_bundle(entries, list_key=load_list_key(keys / "list.key"),
                             signing_key=load_signing_key(keys / "signing.key"), version=1,
                             issued=datetime.now(UTC), valid_for=timedelta(hours=1))
        with Store(tmp / "state") as store:
            HotListInstaller(store, tmp / "state" / "hotlist.bundle", load_signing_pub(keys / "signing.pub"),
                             load_list_key(keys / "list.key")).install(bundle)
        broker = Mosquitto(tmp / "broker")
        broker.start()
        sub = Subscriber(broker, "alprd/bench/hit")
        received: dict[str, float] = {}
        orig = sub._on_message

        def stamp(client: object, userdata: object, msg: object) -> None:
            received[json.loads(msg.payload)["hit_id"]] = time.time()  # type: ignore[attr-defined]
            orig(client, userdata, msg)

        sub.client.on_message = stamp
        cfg = Config.model_validate({
            "device_id": "bench", "reader": {"region": "us", "threads": args.threads},
            "source": {"kind": "video", "path": str(video), "fps": 30},
            "tracking": {"close_after_frames": 3},
            "mqtt": {"host": broker.host, "port": broker.port},
            "storage": {"dir": str(tmp / "state")},
            "hotlist": {"bundle": str(tmp / "state" / "hotlist.bundle"), "list_key": str(keys / "list.key"),
                        "signing_pub": str(keys / "signing.pub")},
            "privacy": {"evidence_pub": str(keys / "evidence.pub")},
            "policy": {"purpose": "benchmark", "custodian": "bench", "retention_days": 1, "sharing": "none"},
        })
        stop = threading.Event()
        daemon = assemble(cfg, privacy_settings(cfg), stop)
        closed_at: dict[str, float] = {}
        daemon.on_event = lambda ev, body: closed_at.__setitem__(body["hit_id"], body["ts"]) if body else None
        peak = [0.0]

        def watch() -> None:
            while not stop.wait(0.5):
                peak[0] = max(peak[0], rss_mb())

        t = threading.Thread(target=watch, name="bench-rss", daemon=True)
        t.start()
        load_before = os.getloadavg()
        t0 = time.monotonic()
        daemon.run(stop)
        wall = time.monotonic() - t0
        stop.set()
        time.sleep(1.0)
        lat = sorted(1000 * (received[k] - closed_at[k]) for k in closed_at if k in received)
        stats = daemon.source.stats
        result = {
            "frames": frames, "wall_s": round(wall, 1), "processed": daemon.pipeline.processed,
            "processed_fps": round(daemon.pipeline.processed / wall, 2),
            "dropped": stats.dropped, "skipped_motion": daemon.pipeline.skipped, "hits": len(closed_at),
            "hit_latency_ms_p50": round(lat[len(lat) // 2], 1) if lat else None,
            "hit_latency_ms_p95": round(lat[min(len(lat) - 1, int(len(lat) * 0.95))], 1) if lat else None,
            "rss_mb_peak": max(peak[0], rss_mb()),
            "ms": daemon.pipeline.timer.summary(),
            "threads_onnx": args.threads,
            "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        }
        print(json.dumps(result))
        sub.close()
        broker.kill()
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
