"""A built wheel carries the models: `pip install .` (not editable) works away from the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("alprd", "models"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300, cwd=src,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (whl,) = out.glob("alprd-*.whl")
    return whl


def test_wheel_holds_every_model_and_contract(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.name for p in (ROOT / "models").iterdir() if p.suffix in (".onnx", ".json"))
    assert shipped, "no models in models/"
    for name in shipped:
        assert f"alprd/models/{name}" in names, name
    # every contract names a model file that travels with it
    for name in shipped:
        if name.endswith(".json"):
            model = json.loads((ROOT / "models" / name).read_text())["file"]
            assert f"alprd/models/{model}" in names, (name, model)
    assert "alprd/py.typed" in names and "alprd/models/README.md" in names


def test_installed_wheel_finds_and_checks_its_models_from_anywhere(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
         str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # The installed copy comes first on sys.path, ahead of this checkout's editable install; run from /
    # so that nothing relative to the checkout can be found by accident.
    probe = (
        "import alprd, alprd.config as c, alprd.selftest as s\n"
        "print(alprd.__file__)\nprint(c.PACKAGE_MODELS_DIR)\n"
        "for check in s.model_checks(c.ReaderConfig().models_dir): print(check.line())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                          cwd="/", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    package, models, *checks = done.stdout.splitlines()
    assert package.startswith(str(site)) and models == str(site / "alprd" / "models")
    contracts = sorted((ROOT / "models").glob("*.json"))
    assert len(checks) == len(contracts)
    assert all(line.split()[2] == "OK" for line in checks), "\n".join(checks)
