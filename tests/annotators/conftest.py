"""Generated videos with known truth for the segmentation tests (small, so the room stays fast)."""

from __future__ import annotations

import pytest

from longvid.synthetic import ShotSpec, TransitionSpec, write_scripted_video


@pytest.fixture(scope="session")
def edited_video(tmp_path_factory):
    """Every kind of transition, and every distractor inside a shot, at 160x90."""
    shots = [
        ShotSpec(50, "drift", seed=1),
        ShotSpec(60, "pan", flashes=(25,), seed=2),
        ShotSpec(55, "fast_pan", seed=3),
        ShotSpec(60, "fast_object", seed=4),
        ShotSpec(55, "static", flashes=(20,), seed=5),
        ShotSpec(50, "shake", seed=6),
        ShotSpec(55, "zoom", seed=7),
        ShotSpec(45, "drift", seed=8),
    ]
    transitions = [
        TransitionSpec("cut"),
        TransitionSpec("dissolve", 16),
        TransitionSpec("cut"),
        TransitionSpec("fade", 20),
        TransitionSpec("dissolve", 24),
        TransitionSpec("fade_out", 14),
        TransitionSpec("fade_in", 14),
    ]
    path = str(tmp_path_factory.mktemp("seg") / "edited.mp4")
    return write_scripted_video(path, shots, transitions, fps=25, width=160, height=90)
