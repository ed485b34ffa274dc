"""Hot-list deltas at the issue's size: a 1,000,000-entry list, 1% of it changed (docs/fleet.md).

    .venv/bin/python bench/bench_hotlist_delta.py                    # 1,000,000 entries, 1% churn
    .venv/bin/python bench/bench_hotlist_delta.py --entries 100000 --churn 0.02

The list is bench_hotlist.py's (random plates, 1% wildcards, states, reasons, expiry dates, case
numbers). Version 2 drops `churn` of the entries and adds as many new ones. Prints one JSON object:
bundle and delta bytes, the time headquarters takes to pack the delta, and the time a device takes
to install it (verify, apply, check both digests, build the index, store it) and to start with it
(bundle + delta replayed), and the peak RSS of the device's process.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hotlist import generate

from alprd.privacy.hotlist import HotListInstaller, pack_bundle, pack_delta, parse_csv
from alprd.privacy.keys import generate_agency_keys, load_list_key, load_signing_key
from alprd.store import Store


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--churn", type=float, default=0.01, help="share of entries removed, and as many added")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="alprd-delta-") as tmp:
        d = Path(tmp)
        generate_agency_keys(d / "keys")
        key, signing = load_list_key(d / "keys" / "list.key"), load_signing_key(d / "keys" / "signing.key")
        generate(d / "v1.csv", args.entries, args.seed)
        v1 = parse_csv((d / "v1.csv").read_bytes(), "v1.csv")
        rng = random.Random(args.seed + 1)
        k = int(len(v1) * args.churn)
        generate(d / "new.csv", k, args.seed + 2)
        v2 = rng.sample(v1, len(v1) - k) + parse_csv((d / "new.csv").read_bytes(), "new.csv")
        now = datetime.now(UTC)
        full1 = pack_bundle(v1, list_key=key, signing_key=signing, version=1, issued=now,
                            valid_for=timedelta(days=7))
        full2 = pack_bundle(v2, list_key=key, signing_key=signing, version=2, issued=now,
                            valid_for=timedelta(days=7))
        t = time.perf_counter()
        delta = pack_delta(full1, v2, list_key=key, signing_key=signing, version=2, issued=now,
                           valid_for=timedelta(days=7))
        pack_s = time.perf_counter() - t
        del v1, v2
        store = Store(d / "dev")
        inst = HotListInstaller(store, d / "dev" / "hotlist.bundle", signing.public_key(), key)
        t = time.perf_counter()
        inst.install(full1)
        full_install_s = time.perf_counter() - t
        t = time.perf_counter()
        inst.install(delta)
        delta_install_s = time.perf_counter() - t
        store.close()
        store = Store(d / "dev")
        again = HotListInstaller(store, d / "dev" / "hotlist.bundle", signing.public_key(), key)
        t = time.perf_counter()
        loaded = again.load_installed()
        start_s = time.perf_counter() - t
        assert loaded is not None and loaded.version == 2
        store.close()
    print(json.dumps({
        "entries": args.entries, "churn": args.churn, "bundle_bytes": len(full2), "delta_bytes": len(delta),
        "ratio": round(len(full2) / len(delta), 1), "hq_pack_delta_s": round(pack_s, 2),
        "device_install_full_s": round(full_install_s, 2),
        "device_install_delta_s": round(delta_install_s, 2),
        "device_start_bundle_plus_delta_s": round(start_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
