"""``longvid segment VIDEO --json``: the documented shape, shots covering every frame with a shot
starting at each boundary, and clear errors."""

from __future__ import annotations

import json

from longvid.cli import main


def test_segment_json(edited_video, capsys):
    assert main(["segment", edited_video.path, "--json", "--keyframes-per-clip", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"fps", "num_frames", "duration", "shots", "transitions", "clips", "keyframes"} <= set(out)
    assert out["num_frames"] == edited_video.num_frames and out["fps"] == 25.0
    shots = out["shots"]
    assert shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == out["num_frames"]
    assert all(a["end_frame"] == b["start_frame"] for a, b in zip(shots, shots[1:]))
    starts = {s["start_frame"] for s in shots}
    assert len(out["transitions"]) == len(shots) - 1 == len(edited_video.transitions)
    for t in out["transitions"]:
        assert t["kind"] in {"cut", "dissolve", "fade"}
        assert t["start_frame"] <= t["end_frame"]
        assert any(t["start_frame"] - 1 <= s <= t["end_frame"] + 1 for s in starts)
    assert all(len(c["keyframes"]) == 2 for c in out["clips"])


def test_segment_summary_and_errors(edited_video, capsys, tmp_path):
    assert main(["segment", edited_video.path, "--detector", "contentdiff"]) == 0
    assert "shots" in capsys.readouterr().out
    assert main(["segment", edited_video.path, "--detector", "nope"]) == 2
    assert "unknown detector" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "missing.mp4")]) == 2
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    assert main(["segment", str(bad)]) == 1
    assert "bad.mp4" in capsys.readouterr().err


def test_help_lists_the_nested_settings(capsys):
    """Every SegmentConfig field becomes a flag, and the help renders (no stray % in a comment)."""
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--fast.cut-threshold" in out and "--decode.skip-loop-filter" in out and "--clips.max-seconds" in out
