"""Decoding a frame plan with PyAV: seeking across gaps gives the same frames as decoding through."""

import torch

from longvid.model.video import decode_frames, probe
from longvid.shards.sampling import frame_indices
from longvid.synthetic import write_video


def test_seeking_decode_matches_sequential_decode(tmp_path):
    info = write_video(str(tmp_path / "v.mp4"), [90, 110], fps=10, width=64, height=48, gop=12)
    vlen, fps = probe(info.path)
    assert (vlen, fps) == (200, 10.0)
    plan = frame_indices(vlen, fps, 4, 8)  # 8 frames spread over 20 s
    seeking = decode_frames(info.path, plan, 32, fps, seek_gap=5)
    through = decode_frames(info.path, plan, 32, fps, seek_gap=10**9)
    assert seeking.shape == (8, 32, 32, 3) and seeking.dtype == torch.uint8
    assert torch.equal(seeking, through)
    repeated = decode_frames(info.path, [0, 0, 199, 250], 32, fps)  # past the end repeats the last
    assert torch.equal(repeated[0], repeated[1]) and torch.equal(repeated[2], repeated[3])


def test_probe_counts_packets_when_the_container_does_not_say(tmp_path):
    info = write_video(str(tmp_path / "v.webm"), [30], fps=10, width=64, height=48, codec="vp9")
    assert probe(info.path) == (30, 10.0)
