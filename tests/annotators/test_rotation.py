"""Rotated phone video: the probe records the display rotation and every place that produces
frames (caption preparation, the training stream, exported clip files) gives them upright.

The file is a generated MP4 whose coded frames are red on top and blue below, with its ``tkhd``
display matrix set as a phone sets it (``synthetic.set_display_rotation``). Upright, a picture
turned 90 degrees clockwise has the red half on the right and is 48 wide, 64 tall."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest

from longvid.annotators.captioners.frames import prepare_clips
from longvid.annotators.clips import ClipConfig
from longvid.annotators.probe import probe_file
from longvid.pipelines.export_media import write_video_media
from longvid.shards import Storage
from longvid.shards.index import read_index_parts
from longvid.shards.reader import read_record
from longvid.shards.streams import rotate_frame
from longvid.shards.stream import ShardStream, SourceSpec, StreamConfig
from longvid.synthetic import write_known_cut_dataset, write_rotated_video

W, H = 64, 48
# clockwise display rotation → (probe's counter-clockwise degrees, where the red half is upright)
CASES = {90: (270, "right"), 180: (180, "bottom"), 270: (90, "left")}


def red_side(picture: np.ndarray) -> str:
    """Which half of an upright H x W x 3 picture is red."""
    h, w = picture.shape[:2]
    red = picture[..., 0].astype(float) - picture[..., 2]
    halves = {"top": red[: h // 2].mean(), "bottom": red[h // 2:].mean(),
              "left": red[:, : w // 2].mean(), "right": red[:, w // 2:].mean()}
    return max(halves, key=halves.get)


def upright_shape(clockwise: int) -> tuple[int, int]:
    return (W, H) if clockwise in (90, 270) else (H, W)  # (height, width)


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    base = tmp_path_factory.mktemp("rotated")
    paths = {}
    for clockwise in CASES:
        paths[clockwise] = str(base / f"rot{clockwise}.mp4")
        write_rotated_video(paths[clockwise], clockwise, W, H, frames=50)
    root = str(base / "ds")
    write_known_cut_dataset(root, [(paths[c], [30]) for c in CASES], per_shard=3, clips=ClipConfig(0.5, 4.0))
    return {"paths": paths, "root": root}


def test_an_unrotated_picture_has_red_on_top():
    picture = np.zeros((H, W, 3), np.uint8)
    picture[: H // 2, :, 0] = 255
    assert red_side(picture) == "top" and red_side(rotate_frame(picture, 270)) == "right"


@pytest.mark.parametrize("clockwise", list(CASES))
def test_probe_records_the_display_rotation(rotated, clockwise):
    probe = probe_file(rotated["paths"][clockwise])
    assert probe["rotation"] == CASES[clockwise][0]
    assert (probe["width"], probe["height"]) == (W, H)  # the coded picture's size, as ffmpeg reports it


def _records(root):
    storage = Storage.for_uri(root)
    videos, _ = read_index_parts(storage)
    for video in videos.to_pylist():
        record = read_record(storage, video["shard"], video["json_offset"], video["json_size"])
        clockwise = int(os.path.basename(video["url"])[3:-4])
        yield clockwise, video, record, storage.read_range(video["shard"], video["media_offset"], video["media_size"])


def test_the_record_keeps_the_rotation_and_caption_frames_come_out_upright(rotated):
    seen = set()
    for clockwise, _, record, media in _records(rotated["root"]):
        assert record["video"]["rotation"] == CASES[clockwise][0]
        clips = prepare_clips("k", media, record["clips"], record["video"]["fps"], "uniform", max_frames=3,
                              longest_edge=64)
        assert len(clips) == 2
        for clip in clips:
            assert clip.frames.shape[1:3] == upright_shape(clockwise)
            assert {red_side(f) for f in clip.frames} == {CASES[clockwise][1]}
        seen.add(clockwise)
    assert seen == set(CASES)


def test_the_training_stream_gives_upright_frames(rotated):
    stream = ShardStream(StreamConfig(sources=[SourceSpec(rotated["root"])], stage="stage1", unit="clip", epochs=1))
    samples = list(stream)
    assert len(samples) == 2 * len(CASES) and stream.skipped == {}
    by_key = {video["key"]: clockwise for clockwise, video, _, _ in _records(rotated["root"])}
    for sample in samples:
        clockwise = by_key[sample["video_key"]]
        frames = sample["frames"].numpy()
        assert frames.shape[1:3] == upright_shape(clockwise)
        assert {red_side(f) for f in frames} == {CASES[clockwise][1]}


def _decoded_upright(path: str) -> list[np.ndarray]:
    """A player's view: decoded frames turned by the file's own display matrix."""
    with av.open(path) as container:
        return [rotate_frame(f.to_ndarray(format="rgb24"), f.rotation) for f in container.decode(video=0)]


def test_exported_videos_and_clip_files_play_upright(rotated, tmp_path):
    ways = set()
    for clockwise, video, record, _ in _records(rotated["root"]):
        out = str(tmp_path / f"out{clockwise}")
        os.makedirs(os.path.join(out, "videos"))
        os.makedirs(os.path.join(out, "clips"))
        result = write_video_media(rotated["root"], video, record["clips"], out, whole=True)
        ways |= set(result["clips"])
        files = [os.path.join(out, "videos", f) for f in os.listdir(os.path.join(out, "videos"))]
        files += [os.path.join(out, "clips", f) for f in os.listdir(os.path.join(out, "clips"))]
        assert len(files) == 3
        for path in files:
            frames = _decoded_upright(path)
            assert frames and all(f.shape[:2] == upright_shape(clockwise) for f in frames), path
            assert {red_side(f) for f in frames} == {CASES[clockwise][1]}, path
    assert "reencode" in ways  # the path that cannot keep the matrix: its pixels are turned instead
