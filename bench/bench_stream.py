"""Daemon stream benchmark: a 1080p 30 fps video made of real photos, replayed at camera pace.

    MALLOC_ARENA_MAX=2 .venv/bin/python bench/bench_stream.py [--photos 12] [--reader KEY=VALUE ...]
        [--pace 30|0] [--scale 1.0] [--cameras 1|2]

Each real photo from ../shared/data/plates/us, scaled to 1920x1080, is shown for 1 s while the view
pans across it (a car passing), then held still for 2 s with sensor noise (an empty street: what the
motion gate is for). The daemon reads it with `source.fps: 30` (late frames dropped, as with a live
camera), motion gating on, every photo's plate on the hot list, against a local mosquitto; a
subscriber timestamps hits. Hit latency runs from the capture of the frame whose read decided the hit
(`ts` in the hit) to its arrival at the subscriber. Prints one JSON line: processed fps, dropped
frames, the share of motion frames read (`read_share`: frames read / (read + dropped next to a frame
with motion)), hits against cars (`hits_equal_cars`), latency p50/p95, peak RSS, and per stage the
p50/p95 ms and how many frames ran it (`ms`: capture = grab + decode, motion, detect, fallback,
closer, recognize, read, track_match, step).

`--pace 0` replays as fast as the daemon reads (no frame dropped): what the reader finds and what
a frame costs, whatever else the machine is doing. `--scale 0.5` shows every photo at half size
(distant plates). `--cameras 2` gives the daemon two cameras (`sources:`), the photos split
between two streams played at once: one reader for both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "plates" / "us"
sys.path.insert(0, str(ROOT / "tests"))


def unit_environment() -> dict[str, str]:
    """The `Environment=` settings of systemd/alprd.service: the daemon runs as the service would."""
    env = {}
    for line in (ROOT / "systemd" / "alprd.service").read_text(encoding="utf-8").splitlines():
        if line.startswith("Environment="):
            key, _, value = line.removeprefix("Environment=").partition("=")
            env[key] = value
    return env


def make_video(
    path: Path, photos: list[Path], seconds_each: float = 1.0, still_s: float = 2.0, fps: int = 30,
    scale: float = 1.0,
) -> int:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (1920, 1080))
    rng = np.random.default_rng(0)
    noise = [rng.integers(-3, 4, (1080, 1920, 3), dtype=np.int16) for _ in range(4)]  # sensor noise
    n = 0
    for p in photos:
        img = cv2.imread(str(p))
        if img is None:
            continue
        big = cv2.resize(img, (2112, 1188), interpolation=cv2.INTER_LINEAR)  # 10% margin to pan in
        if scale != 1.0:
            # the photo smaller, on a grey street: its plate as far away as `scale` says
            small = cv2.resize(big, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            canvas = np.full_like(big, 110)
            y, x = (big.shape[0] - small.shape[0]) // 2, (big.shape[1] - small.shape[1]) // 2
            canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
            big = canvas
        steps = int(seconds_each * fps)
        view = big[54 : 54 + 1080, :1920]
        for k in range(steps):
            dx = int((big.shape[1] - 1920) * k / max(1, steps - 1))
            view = np.ascontiguousarray(big[54 : 54 + 1080, dx : dx + 1920])
            out.write(view)
            n += 1
        still = cv2.GaussianBlur(view, (0, 0), 8).astype(np.int16)  # the car has gone: a static street
        for k in range(int(still_s * fps)):
            out.write(np.clip(still + noise[k % len(noise)], 0, 255).astype(np.uint8))
            n += 1
    out.release()
    return n


def vm_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def commit() -> str:
    import subprocess

    out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                         text=True, check=False)
    return out.stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1,
                    help="reader.threads: onnxruntime threads of the line finder and the recognizer (the "
                         "detectors': --reader detector_threads=N, by default the CPUs, at most 4)")
    ap.add_argument("--reader", action="append", default=[], metavar="KEY=YAML",
                    help="override a reader config key, e.g. --reader detector_size=960")
    ap.add_argument("--tracking", action="append", default=[], metavar="KEY=YAML",
                    help="override a tracking config key, e.g. --tracking rehit_after_s=0")
    ap.add_argument("--pace", type=float, default=30.0,
                    help="replay fps (30: a live camera, late frames dropped; 0: every frame read)")
    ap.add_argument("--scale", type=float, default=1.0, help="photo size in the frame (0.5: distant plates)")
    ap.add_argument("--cameras", type=int, default=1, choices=(1, 2), help="cameras (streams) of one daemon")
    args = ap.parse_args()
    import csv
    import subprocess
    from datetime import UTC, datetime, timedelta

    import yaml
    from conftest import Mosquitto, Subscriber  # the test suite's broker fixture, reused

    from alprd.privacy.hotlist import HotListInstaller, entries_from_rows, pack_bundle
    from alprd.privacy.keys import generate_agency_keys, load_list_key, load_signing_key, load_signing_pub
    from alprd.store import Store

    rows = list(csv.DictReader((DATA / "labels.csv").read_text().splitlines()))[: args.photos]
    tmp = Path(tempfile.mkdtemp(prefix="alprd-bench-"))
    broker = None
    try:
        videos = [tmp / f"stream{i}.avi" for i in range(args.cameras)]
        frames = sum(make_video(v, [DATA / r["file"] for r in rows[i :: args.cameras]], scale=args.scale)
                     for i, v in enumerate(videos))
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
        sub = Subscriber(broker, "alprd/bench/#")
        received: dict[str, float] = {}
        orig = sub._on_message

        def stamp(client: object, userdata: object, msg: object) -> None:
            if msg.topic.endswith("/hit"):  # type: ignore[attr-defined]
                received[json.loads(msg.payload)["hit_id"]] = time.time()  # type: ignore[attr-defined]
            orig(client, userdata, msg)

        sub.client.on_message = stamp
        reader: dict[str, object] = {"region": "us", "threads": args.threads}
        for kv in args.reader:
            key, _, value = kv.partition("=")
            reader[key] = yaml.safe_load(value)
        tracking: dict[str, object] = {"close_after_frames": 3}
        for kv in args.tracking:
            key, _, value = kv.partition("=")
            tracking[key] = yaml.safe_load(value)
        cfg = {
            "device_id": "bench", "reader": reader,
            "sources": [{"name": f"cam{i}", "kind": "video", "path": str(v), "fps": args.pace}
                        for i, v in enumerate(videos)],
            "tracking": tracking,
            "mqtt": {"host": broker.host, "port": broker.port, "drain_timeout_s": 20},
            "metrics": {"interval_s": 5},
            "storage": {"dir": str(tmp / "state")},
            "hotlist": {"bundle": str(tmp / "state" / "hotlist.bundle"), "list_key": str(keys / "list.key"),
                        "signing_pub": str(keys / "signing.pub")},
            "privacy": {"evidence_pub": str(keys / "evidence.pub")},
            "policy": {"purpose": "benchmark", "custodian": "bench", "retention_days": 1, "sharing": "none"},
        }
        (tmp / "alprd.yaml").write_text(yaml.safe_dump(cfg))
        load_before = os.getloadavg()
        # the daemon as the service runs it: its own process, so its RSS is its own
        t0 = time.monotonic()
        with (tmp / "daemon.log").open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "alprd", "run", "--config", str(tmp / "alprd.yaml")],
                stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **unit_environment()},
            )
        hwm = rss = 0
        cpu = 0.0
        while proc.poll() is None:
            hwm = max(hwm, vm_kib(proc.pid, "VmHWM"))
            rss = max(rss, vm_kib(proc.pid, "VmRSS"))
            cpu = max(cpu, cpu_s(proc.pid))
            time.sleep(0.2)
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            print((tmp / "daemon.log").read_text()[-3000:], file=sys.stderr)
            return 1
        time.sleep(1.0)
        hits = sub.json_on("/hit")
        metrics = sub.json_on("/metrics")[-1]
        lat = sorted(1000 * (received[h["hit_id"]] - h["ts"]) for h in hits if h["hit_id"] in received)
        # verified hits went out in the step of the frame that decided them: read + publish, no waiting
        early = sorted(1000 * (received[h["hit_id"]] - h["ts"]) for h in hits
                       if h["hit_id"] in received and h["verified"])
        video_s = frames / 30 / args.cameras
        plates = [r["plate"] for r in rows]
        hit_plates = sorted(str(h["plate"]) for h in hits)
        result = {
            "frames": frames, "video_s": round(video_s, 1), "wall_s": round(wall, 1),
            "frames_in": metrics["frames_in"], "processed": metrics["frames_processed"],
            "processed_fps": round(metrics["frames_processed"] / video_s, 2),
            "skipped_motion": metrics["frames_skipped_motion"], "dropped": metrics["frames_dropped"],
            "dropped_motion": metrics["frames_dropped_motion"], "read_share": metrics["read_share"],
            "hits": len(hits), "plates": len(rows), "verified": sum(1 for h in hits if h["verified"]),
            "hits_equal_cars": hit_plates == sorted(plates),
            "plates_missed": sorted(set(plates) - set(hit_plates)),
            "repeats": sum(1 for h in hits if h.get("repeat")),
            "directions": dict(Counter(str(h.get("direction")) for h in hits)),
            "hit_latency_ms_p50": round(lat[len(lat) // 2], 1) if lat else None,
            "hit_latency_ms_p95": round(lat[min(len(lat) - 1, int(len(lat) * 0.95))], 1) if lat else None,
            "verified_hit_latency_ms": [round(x, 1) for x in early],
            "hit_latency_ms_in_order": [round(1000 * (received[h["hit_id"]] - h["ts"]), 1) for h in hits
                                        if h["hit_id"] in received],
            "rss_mb_peak": round(hwm / 1024, 1), "rss_mb_sampled_max": round(rss / 1024, 1),
            "daemon_cpu_s": round(cpu, 1),
            "ms": metrics["ms"], "cameras": metrics["cameras"], "reader": reader, "tracking": tracking,
            "pace": args.pace, "scale": args.scale, "commit": commit(),
            "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        }
        print(json.dumps(result))
        sub.close()
        return 0
    finally:
        if broker is not None:
            broker.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
