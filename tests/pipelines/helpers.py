"""Builders shared by the pipeline tests: manifests mixing good and bad sources."""

from __future__ import annotations

import os
import shutil

from longvid.pipelines.manifest import write_manifest
from longvid.synthetic import write_audio_only, write_image, write_video

# source name → the words its ledger reason must contain
BAD_SOURCES = {
    "empty.mp4": "empty file",
    "random.mp4": "not a readable video",
    "truncated.mp4": "not a readable video",
    "picture.mp4": "still image",
    "notes.mp4": "not a readable video",
    "audio.mp4": "audio-only",
    "missing.mp4": "not_found",
}


def make_bad_sources(folder: str, good_video: str) -> dict[str, str]:
    """Write the bad inputs into ``folder``; returns name → path (``missing.mp4`` is not written)."""
    os.makedirs(folder, exist_ok=True)
    p = {name: os.path.join(folder, name) for name in BAD_SOURCES}
    open(p["empty.mp4"], "wb").close()
    with open(p["random.mp4"], "wb") as f:
        f.write(os.urandom(20000))
    data = open(good_video, "rb").read()
    with open(p["truncated.mp4"], "wb") as f:
        f.write(data[: len(data) // 2])
    tmp_png = os.path.join(folder, "picture.png")
    write_image(tmp_png)
    shutil.move(tmp_png, p["picture.mp4"])
    with open(p["notes.mp4"], "w") as f:
        f.write("meeting notes, definitely not a video\n" * 50)
    tmp_audio = os.path.join(folder, "audio.m4a")
    write_audio_only(tmp_audio)
    shutil.move(tmp_audio, p["audio.mp4"])
    return p


def good_videos(folder: str, count: int, seconds: float = 6.0, fps: int = 25) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        frames = int(seconds * fps)
        shots = [frames // 3 + i, frames // 3, frames - 2 * (frames // 3)]  # distinct content per i
        path = os.path.join(folder, f"good-{i:03d}.mp4")
        write_video(path, shots, fps=fps, width=64 + 16 * (i % 3), height=48)
        paths.append(path)
    return paths


__all__ = ["BAD_SOURCES", "good_videos", "make_bad_sources", "write_manifest"]
