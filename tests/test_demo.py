"""`alprd demo` end to end: synthetic clip, embedded broker, real models, at least one hit printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from alprd.demo import frame_count, render_frames, vehicles

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


def test_clip_shows_each_car_over_several_frames() -> None:
    frames = list(render_frames())
    assert len(frames) == frame_count() and frames[0].shape == (720, 1280, 3)
    assert any(v.listed for v in vehicles()) and any(not v.listed for v in vehicles())


@pytest.mark.skipif(not (MODELS / "plate_det.onnx").exists(), reason="no plate detector in models/ yet")
def test_demo_runs_end_to_end_and_prints_a_hit() -> None:
    out = subprocess.run([sys.executable, "-m", "alprd", "demo"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "HIT " in out.stdout
    assert "STATUS   stopped" in out.stdout
