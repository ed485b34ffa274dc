"""`alprd selftest` natively: real models, real keys, a real hot list, a real SQLite file."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alprd import selftest
from alprd.cli import main
from alprd.config import PACKAGE_MODELS_DIR, HotlistConfig, PrivacyConfig, ReaderConfig, load_config
from alprd.privacy.hotlist import entries_from_rows, pack_bundle
from alprd.privacy.keys import generate_agency_keys, load_list_key, load_signing_key
from alprd.read.imageio import read_image
from alprd.read.reader import PlateReader
from alprd.read.report import plate_json


def _lines(out: str) -> dict[str, str]:
    """check name -> status, from the selftest's `name  STATUS  detail` lines."""
    result = {}
    for line in out.splitlines():
        parts = line.split()
        for i, word in enumerate(parts):
            if word in ("OK", "FAIL", "SKIP") and i:
                result[" ".join(parts[:i])] = word
                break
    return result


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An installed device in a folder: agency keys, config, storage with an installed hot list."""
    root = tmp_path_factory.mktemp("device")
    keys = root / "keys"
    generate_agency_keys(keys)
    bundle = pack_bundle(
        entries_from_rows([{"plate": "KXW4736", "reason": "selftest"}]),
        list_key=load_list_key(keys / "list.key"),
        signing_key=load_signing_key(keys / "signing.key"),
        version=3,
        issued=datetime.now(UTC),
        valid_for=timedelta(hours=2),
    )
    (root / "incoming.bundle").write_bytes(bundle)
    (root / "alprd.yaml").write_text(
        "device_id: selftest-01\n"
        "storage:\n  dir: storage\n"
        "hotlist:\n  bundle: storage/hotlist.bundle\n  list_key: keys/list.key\n"
        "  signing_pub: keys/signing.pub\n"
        "privacy:\n  evidence_pub: keys/evidence.pub\n"
        "policy:\n  purpose: stolen vehicles\n  custodian: test custodian\n"
        "  retention_days: 7\n  sharing: none\n"
    )
    cfg = str(root / "alprd.yaml")
    assert main(["hotlist", "install", str(root / "incoming.bundle"), "--config", cfg, "--actor", "t"]) == 0
    return root


def test_selftest_passes_on_the_shipped_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest"]) == 0
    out = capsys.readouterr().out
    checks = _lines(out)
    contracts = sorted(p.stem for p in PACKAGE_MODELS_DIR.glob("*.json"))
    assert contracts, "no shipped model contracts"
    for name in contracts:
        assert checks[f"model {name}"] == "OK", out
    assert checks["read"] == "OK", out
    assert f"read as {selftest.PLATE_TEXT}" in out
    assert out.rstrip().splitlines()[-1].startswith("selftest: OK")


def test_photos_are_read_with_the_loaded_reader_as_alprd_read_would(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(data_dir / "eu" / "eu1.jpg")
    image, scale = read_image(photo)
    expected = {"plates": [plate_json(r, scale) for r in _reader().read(image).reads]}
    assert main(["selftest", "--photo", photo, "--photo", str(data_dir / "missing.jpg")]) == 1
    out = capsys.readouterr().out
    assert _lines(out)["photo eu1.jpg"] == "OK"
    assert _lines(out)["photo missing.jpg"] == "FAIL"
    got = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [g["file"] for g in got] == [photo, str(data_dir / "missing.jpg")]
    def plates(obj: dict[str, Any]) -> list[tuple[str, list[int]]]:
        return [(p["text"], p["box"]) for p in obj["plates"]]

    assert plates(got[0]) == plates(expected)
    assert "error" in got[1]


def test_bench_prints_this_devices_ms_per_read_with_the_daemons_reader(
    device: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    photo = str(data_dir / "us" / sorted(p.name for p in (data_dir / "us").glob("*.jpg"))[0])
    main(["selftest", "--config", str(device / "alprd.yaml"), "--bench", "3", "--photo", photo])
    out = capsys.readouterr().out
    lines = {name: line for line in out.splitlines() for name in
             ("bench plate", "bench near look", "bench no plate", "bench closer look",
              f"bench {Path(photo).name}")
             if line.startswith(name + " ")}
    assert len(lines) == 5, out
    for name, line in lines.items():
        assert _lines(line)[name] == "OK", line
        m = re.search(r"p50 ([0-9.]+) ms, p95 ([0-9.]+) ms per read over 3 reads", line)
        assert m and 0 < float(m[1]) <= float(m[2]), line
        assert "detector threads" in line
    # an empty street costs more than a plate the fast detector reads well, the closer look more still
    p50 = {n: float(re.search(r"p50 ([0-9.]+)", line)[1]) for n, line in lines.items()}  # type: ignore[index]
    assert p50["bench closer look"] > p50["bench no plate"]
    assert main(["selftest", "--bench", "0"]) in (0, 1) and "bench plate" not in capsys.readouterr().out


def test_a_corrupted_model_copy_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    shutil.copytree(PACKAGE_MODELS_DIR, models)
    victim = models / "plate_rec.onnx"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one bit pattern changed: only the hash can tell
    victim.write_bytes(bytes(data))

    assert main(["selftest", "--models-dir", str(models)]) == 1
    out = capsys.readouterr().out
    checks = _lines(out)
    assert checks["model plate_rec"] == "FAIL"
    assert "SHA-256" in out and "plate_rec.onnx" in out
    assert checks["model plate_det"] == "OK"
    assert checks["read"] == "FAIL"
    assert out.rstrip().splitlines()[-1].startswith("selftest: FAIL")


def test_a_missing_models_folder_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", "--models-dir", str(tmp_path / "nowhere")]) == 1
    checks = _lines(capsys.readouterr().out)
    assert checks["models"] == "FAIL" and checks["read"] == "FAIL"


def test_selftest_with_a_device_config(device: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest", "--config", str(device / "alprd.yaml")]) == 0
    out = capsys.readouterr().out
    checks = _lines(out)
    for name in ("config", "read", "key hotlist.list_key", "key hotlist.signing_pub",
                 "key privacy.evidence_pub", "storage", "hotlist"):
        assert checks[name] == "OK", out
    assert "mode 0600" in out
    assert "integrity_check" in out
    assert "version 3" in out


def test_loose_key_mode_fails(device: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    shutil.copytree(device / "keys", keys)
    os.chmod(keys / "list.key", 0o644)
    base = load_config(device / "alprd.yaml")
    cfg = base.model_copy(update={"hotlist": base.hotlist.model_copy(update={"list_key": keys / "list.key"})})
    checks = {c.name: c for c in selftest.key_checks(cfg)}
    assert checks["key hotlist.list_key"].status == "FAIL"
    assert "chmod 600" in checks["key hotlist.list_key"].detail
    assert checks["key hotlist.signing_pub"].status == "OK"


def test_credentials_are_checked_at_their_load_credential_source(device: Path, tmp_path: Path) -> None:
    """Outside the service /run/credentials/alprd.service/* do not exist: the unit names their sources."""
    unit = tmp_path / "alprd.service"
    unit.write_text(
        "[Service]\n"
        f"LoadCredential=list.key:{device / 'keys' / 'list.key'}\n"
        f"LoadCredential=signing.pub:{device / 'keys' / 'signing.pub'}\n"
        f"LoadCredential=evidence.pub:{device / 'keys' / 'evidence.pub'}\n"
    )
    base = load_config(device / "alprd.yaml")
    defaults = {"hotlist": HotlistConfig(bundle=base.hotlist.bundle), "privacy": PrivacyConfig()}
    cfg = base.model_copy(update=defaults)
    assert str(cfg.hotlist.list_key).startswith("/run/credentials/alprd.service/")
    if os.environ.get("CREDENTIALS_DIRECTORY") or cfg.hotlist.list_key.exists():
        pytest.skip("running inside a systemd service with credentials")
    checks = {c.name: c for c in selftest.key_checks(cfg, units=(unit,))}
    assert all(c.status == "OK" for c in checks.values()), checks
    assert "LoadCredential source" in checks["key hotlist.list_key"].detail
    assert selftest.hotlist_check(cfg, units=(unit,)).status == "OK"
    # without the unit, the credential is simply missing
    missing = {c.name: c for c in selftest.key_checks(cfg, units=())}
    assert missing["key hotlist.list_key"].status == "FAIL"


def test_corrupt_database_and_tampered_bundle_fail(device: Path, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    shutil.copytree(device / "storage", storage)
    base = load_config(device / "alprd.yaml")
    cfg = base.model_copy(update={
        "storage": base.storage.model_copy(update={"dir": storage}),
        "hotlist": base.hotlist.model_copy(update={"bundle": storage / "hotlist.bundle"}),
    })
    assert selftest.storage_check(cfg).status == "OK"
    assert selftest.hotlist_check(cfg).status == "OK"

    db = storage / "alprd.db"
    for extra in ("alprd.db-wal", "alprd.db-shm"):
        (storage / extra).unlink(missing_ok=True)
    data = bytearray(db.read_bytes())
    data[4096 : 4096 + 512] = os.urandom(512)  # scribble over the second page
    db.write_bytes(bytes(data))
    check = selftest.storage_check(cfg)
    assert check.status == "FAIL", check

    bundle = bytearray((storage / "hotlist.bundle").read_bytes())
    bundle[-100] ^= 0x01
    (storage / "hotlist.bundle").write_bytes(bytes(bundle))
    check = selftest.hotlist_check(cfg)
    assert check.status == "FAIL" and "signature" in check.detail


def test_no_bundle_installed_is_skipped_not_failed(device: Path, tmp_path: Path) -> None:
    base = load_config(device / "alprd.yaml")
    cfg = base.model_copy(update={"hotlist": base.hotlist.model_copy(update={"bundle": tmp_path / "none"})})
    assert selftest.hotlist_check(cfg).status == "SKIP"


def test_storage_folder_not_yet_created(device: Path, tmp_path: Path) -> None:
    base = load_config(device / "alprd.yaml")
    cfg = base.model_copy(update={"storage": base.storage.model_copy(update={"dir": tmp_path / "a" / "b"})})
    check = selftest.storage_check(cfg)
    assert check.status == "OK" and "does not exist yet" in check.detail


def test_invalid_config_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("reader:\n  threads: 0\n")
    assert main(["selftest", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert _lines(out)["config"] == "FAIL"
    assert f"{cfg}:2 reader.threads" in out


@pytest.mark.parametrize("size", [(960, 540, 240), (1280, 720, 300), (640, 480, 200)])
def test_rendered_plates_read_right(size: tuple[int, int, int]) -> None:
    """The selftest's own plate must not depend on one lucky text or scale."""
    reader = _reader()
    width, height, plate_w = size
    for text in (selftest.PLATE_TEXT, "7TRF382", "MHD2940"):
        result = reader.read(selftest.render_plate(text, width, height, plate_w), region="auto")
        assert result.reads and result.reads[0].text == text, (text, size, result.reads[:1])


_READER: list[PlateReader] = []


def _reader() -> PlateReader:
    if not _READER:
        _READER.append(PlateReader(ReaderConfig()))
    return _READER[0]
