"""cluster/sizing.py: the arithmetic behind cluster/SIZING.md, on figures chosen so the answers
can be worked out by hand."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("longvid_cluster_sizing", Path(__file__).resolve().parents[2] / "cluster" / "sizing.py")
sizing = importlib.util.module_from_spec(spec)
sys.modules["longvid_cluster_sizing"] = sizing  # dataclasses look their module up while the class is built
spec.loader.exec_module(sizing)

MEASURED = {  # per-core video-seconds per CPU-second, and the two ratios
    "segment_720p": 8.0, "segment_1080p": 4.0, "decode_720p": 16.0, "decode_1080p": 8.0,
    "segment_vs_decode_720p": 0.5, "ingest_vs_decode_720p": 0.4, "json_bytes_per_clip": 1000.0,
}


def test_plan_from_measured_rates_and_assumptions():
    a = sizing.Assumptions(hours=1000, share_1080p=0.5, mbit_720p=2.0, mbit_1080p=4.0, audio_kbit=0,
                           clip_seconds=10, days=10, utilisation=0.5, safety=2.0, pod_cpus=10)
    p = sizing.plan(MEASURED, a, captions_per_gpu_s=None)
    assert p["pipeline_efficiency"] == pytest.approx(0.8)  # 0.4 / 0.5
    # ingest rates 6.4 and 3.2 video-s per core-s: 0.5/6.4 + 0.5/3.2 = 0.234375 core-s per video-s
    assert p["core_hours"] == pytest.approx(1000 * 0.234375)
    assert p["vcpus_30d"] == pytest.approx(234.375 * 2.0 / (240 * 0.5))
    assert p["cpu_pods"] == 1
    assert p["caption_prep_core_hours_floor"] == pytest.approx(1000 * (0.5 / 16 + 0.5 / 8))
    assert p["video_tb"] == pytest.approx(1000 * 3600 * 3.0e6 / 8 / 1e12)
    assert p["clips"] == 360_000 and p["metadata_gb"] == pytest.approx(0.36)
    assert "gpu_hours" not in p  # no GPU figure until bench/captioning.py has measured one
    with_gpu = sizing.plan(MEASURED, a, captions_per_gpu_s=5.0)
    assert with_gpu["gpu_hours"] == pytest.approx(360_000 / 5 / 3600)
    assert with_gpu["gpus_30d"] == pytest.approx(20 / (240 * 0.8))
