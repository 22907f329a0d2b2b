import os
import shutil

import pytest

from longvid.annotators.base import ItemFailed
from longvid.annotators.probe import probe_bytes, probe_file
from longvid.synthetic import write_audio_only, write_image, write_video


@pytest.mark.parametrize("codec,ext,container", [
    ("h264", "mp4", "mov,mp4,m4a,3gp,3g2,mj2"),
    ("hevc", "mkv", "matroska,webm"),
    ("vp9", "webm", "matroska,webm"),
    ("mpeg4", "avi", "avi"),
])
def test_probe_reads_every_codec_and_counts_frames(tmp_path, codec, ext, container):
    v = write_video(str(tmp_path / f"v.{ext}"), [20, 33], fps=25, codec=codec)
    p = probe_file(v.path)
    assert p["codec"] == codec and p["container"] == container
    assert p["num_frames"] == 53 and p["fps"] == 25.0
    assert abs(p["duration"] - 53 / 25) < 0.05
    assert (p["width"], p["height"]) == (160, 96)
    assert p["media_ext"] == ext


def test_probe_reports_audio(tmp_path):
    v = write_video(str(tmp_path / "v.mp4"), [30], with_audio=True)
    assert probe_file(v.path)["has_audio"] is True


def test_bad_inputs_have_reasons(tmp_path):
    write_audio_only(str(tmp_path / "a.m4a"))
    write_image(str(tmp_path / "i.png"))
    good = write_video(str(tmp_path / "g.mp4"), [50]).path
    data = open(good, "rb").read()
    cases = {
        "empty": (b"", "empty file"),
        "random": (os.urandom(4096), "not a readable video"),
        "text": (b"just some text, honestly\n" * 20, "not a readable video"),
        "truncated": (data[: len(data) // 3], "not a readable video"),
        "audio": (open(tmp_path / "a.m4a", "rb").read(), "audio-only"),
        "image": (open(tmp_path / "i.png", "rb").read(), "still image"),
    }
    for name, (blob, expected) in cases.items():
        with pytest.raises(ItemFailed) as info:
            probe_bytes(blob)
        assert expected in info.value.reason, (name, info.value.reason)


def test_probe_cli(tmp_path, capsys):
    from longvid.cli import main

    v = write_video(str(tmp_path / "v.mp4"), [25, 25])
    assert main(["probe", v.path]) == 0
    assert '"num_frames": 50' in capsys.readouterr().out
    shutil.copy(v.path, tmp_path / "x.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"nope")
    assert main(["probe", str(tmp_path / "bad.mp4")]) == 1
    assert "not a readable video" in capsys.readouterr().err
    assert main(["probe", str(tmp_path / "missing.mp4")]) == 2
