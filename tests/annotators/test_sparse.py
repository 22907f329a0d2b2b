"""Sparse decoding (reference frames only, cuts placed by a dense decode of their gap) and windowed
segmentation give the same cuts and shots as a dense single pass, on generated H.264 with and
without B-frames whose cuts are known; the hardware-decode setting falls back to the CPU here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from longvid.annotators.base import ItemFailed
from longvid.annotators.decode import DecodeConfig, iter_thumbnails, nvidia_device_present, resolve_hwaccel
from longvid.annotators.probe import probe_file
from longvid.annotators.segment import (SegmentConfig, build_detector, scan_settings, segment_video,
                                        segment_video_windowed, thumbnail_config)
from longvid.annotators.sparse import scan
from longvid.annotators.windows import MIN_OVERLAP_FRAMES, Window, WindowConfig, plan_windows, segment_windows
from longvid.cli import main
from longvid.synthetic import ShotSpec, TransitionSpec, write_scripted_video

MOTIONS = ["drift", "pan", "static", "fast_object", "zoom", "drift", "shake"]
LENGTHS = [97, 83, 121, 75, 110, 88, 131, 79, 102, 93, 117, 85, 99]
KINDS = ["cut", "cut", "dissolve", "cut", "cut", "cut", "fade", "cut", "cut", "dissolve", "cut", "cut"]
ENCODES = {  # name -> (x264 preset, extra x264 settings): B-frames or none; no keyframes placed at cuts
    "bframes": ("veryfast", "scenecut=0"),
    "no-bframes": ("ultrafast", "scenecut=0"),
}


@pytest.fixture(scope="module", params=sorted(ENCODES))
def long_video(request, tmp_path_factory):
    """~52 s at 25 fps (1,280 frames, 160x90): 9 cuts, 2 dissolves and a fade, a 48-frame GOP."""
    shots = [ShotSpec(n, MOTIONS[i % len(MOTIONS)], seed=40 + i) for i, n in enumerate(LENGTHS)]
    transitions = [TransitionSpec(k, 20 if k != "cut" else 0) for k in KINDS]
    preset, params = ENCODES[request.param]
    path = str(tmp_path_factory.mktemp("sparse") / f"long-{request.param}.mp4")
    truth = write_scripted_video(path, shots, transitions, fps=25, width=160, height=90, preset=preset,
                                 gop=48, x264_params=params)
    return request.param, truth, probe_file(path)


def cuts_of(result: dict) -> list[int]:
    return [t["start_frame"] for t in result["transitions"] if t["kind"] == "cut"]


def test_sparse_cuts_are_the_dense_cuts(long_video):
    name, truth, probe = long_video
    dense = segment_video(truth.path, probe, "v", SegmentConfig(detector="fast"))
    sparse = segment_video(truth.path, probe, "v", SegmentConfig(detector="sparse"))
    true_cuts = [t["start_frame"] for t in truth.transitions if t["kind"] == "cut"]
    assert cuts_of(dense) == true_cuts
    assert cuts_of(sparse) == cuts_of(dense)
    assert sparse["num_frames"] == dense["num_frames"] == truth.num_frames
    gradual = [t for t in truth.transitions if t["kind"] != "cut"]
    found = [t for t in sparse["transitions"] if t["kind"] != "cut"]
    assert len(found) == len(gradual)
    for want, got in zip(gradual, found):  # each gradual transition found inside its span
        assert got["start_frame"] <= want["end_frame"] and want["start_frame"] <= got["end_frame"]
    if name == "bframes":
        config = SegmentConfig(detector="sparse")
        coarse = scan(truth.path, thumbnail_config(config), config.sparse, build_detector(config))
        assert coarse.sparse and len(coarse.frames) < 0.8 * truth.num_frames  # B-frames were skipped
        placed = set(cuts_of(sparse)) - set(coarse.frames.tolist())
        assert placed  # some cuts lie on frames the coarse pass never decoded: placed by refinement
        assert sparse["decoded_frames"] < truth.num_frames
    else:  # nothing to skip in the decoder: every frame decoded once, the detector shown every stride-th
        config = SegmentConfig(detector="sparse")
        coarse = scan(truth.path, thumbnail_config(config), config.sparse, build_detector(config))
        assert coarse.sparse and coarse.stride == config.sparse.stride == 3
        assert set(coarse.frames.tolist()) == set(range(0, truth.num_frames, 3))
        placed = set(cuts_of(sparse)) - set(coarse.frames.tolist())
        assert placed  # cuts on frames the detector never saw, placed by their luma change ...
        assert sparse["decoded_frames"] == truth.num_frames  # ... without decoding any frame twice


@pytest.mark.parametrize("stride", [2, 4])
def test_stride_pass_without_b_frames_places_every_cut_exactly(long_video, stride):
    from longvid.annotators.sparse import SparseConfig

    name, truth, probe = long_video
    result = segment_video(truth.path, probe, "v", SegmentConfig(detector="sparse", sparse=SparseConfig(stride=stride)))
    assert cuts_of(result) == [t["start_frame"] for t in truth.transitions if t["kind"] == "cut"]
    assert len([t for t in result["transitions"] if t["kind"] != "cut"]) == 3  # 2 dissolves and the fade
    if name == "bframes":  # the stride is for streams without B-frames; this one skips its B-frames instead
        assert result["decoded_frames"] < truth.num_frames
    else:
        assert result["num_frames"] == result["decoded_frames"] == truth.num_frames


def test_luma_changes_place_a_concentrated_change_and_refuse_a_spread_or_unknown_one():
    import av

    from longvid.annotators.sparse import LumaChanges, luma_sample, place_in_gap

    def frame(level, fmt="yuv420p", dtype=np.uint8, chroma=128):
        f = av.VideoFrame(64, 36, fmt)
        for i, plane in enumerate(f.planes):
            plane.update(np.full(plane.buffer_size // np.dtype(dtype).itemsize, chroma if i else level, dtype).tobytes())
        return f

    thumbs = {0: np.full((27, 48, 3), 90, np.uint8), 1: np.full((27, 48, 3), 200, np.uint8)}
    changes = LumaChanges(start=0)
    changes.seen(0, frame(20), thumbs[0])
    for index, level in [(1, 22), (2, 200)]:
        changes.hold(index, frame(level))
    changes.seen(3, frame(203), thumbs[1])  # the thumbnails differ: a candidate gap, its frames measured
    d = changes.gap(0, 3)
    assert d is not None and place_in_gap(d, 1.5) == 2  # the change into frame 2
    assert changes.level(0) < 0.08 <= changes.level(2)  # luma 20 of the limited range (16-235) is near black
    changes.hold(4, frame(203))
    changes.hold(5, frame(204))
    changes.seen(6, frame(205), thumbs[1])  # the same picture: no cut possible, nothing measured
    assert changes.gap(3, 6) is None
    changes.hold(8, frame(10))  # frame 7 never decoded
    changes.seen(9, frame(240), thumbs[0])
    assert changes.gap(6, 9) is None  # a frame of the gap unknown: it is decoded again instead
    assert place_in_gap(np.array([0.1, 0.09, 0.11], np.float32), 1.5) is None  # spread: motion or a fast dissolve
    changes.hold(10, frame(240, chroma=40))
    changes.seen(11, frame(240, chroma=40), thumbs[1])
    d = changes.gap(9, 11)
    assert d is not None and place_in_gap(d, 1.5) == 1  # the same brightness, other colours: still a cut at 10
    sample = luma_sample(frame(1000, "yuv420p10le", np.uint16, chroma=512))
    assert sample.dtype == np.int32 and set(sample.tolist()) == {1000, 512}  # 10-bit samples read as 16-bit words


def test_plan_windows_partitions_the_video():
    windows = plan_windows(10_000, 25.0, WindowConfig(window_seconds=100, overlap_seconds=4))
    assert len(windows) == 4
    assert windows[0].core_start == 0 and windows[-1].core_end == 10_000
    assert all(a.core_end == b.core_start for a, b in zip(windows, windows[1:]))
    assert all(w.core_start - w.decode_start == MIN_OVERLAP_FRAMES for w in windows[1:])  # 4 s < the floor
    assert windows[0].decode_start == 0 and windows[-1].decode_end == 10_000
    assert plan_windows(100, 25.0, WindowConfig()) == [Window(0, 0, 100, 100)]


@pytest.mark.parametrize("detector", ["sparse", "fast"])
def test_windows_with_a_cut_and_a_dissolve_on_edges_stitch_to_one_pass(long_video, detector):
    _, truth, probe = long_video
    config = SegmentConfig(detector=detector)
    cut = [t for t in truth.transitions if t["kind"] == "cut"][4]["start_frame"]
    dissolve = [t for t in truth.transitions if t["kind"] == "dissolve"][1]
    across = (dissolve["start_frame"] + dissolve["end_frame"]) // 2  # an edge in the middle of the dissolve
    n, pad = truth.num_frames, MIN_OVERLAP_FRAMES
    windows = [Window(0, 0, cut, cut + pad), Window(cut - pad, cut, across, min(n, across + pad)),
               Window(across - pad, across, n, n)]
    one = segment_video(truth.path, probe, "v", config)
    stitched = segment_windows(truth.path, windows, thumbnail_config(config), scan_settings(config),
                               lambda: build_detector(config))
    assert [t["frame"] for t in stitched.transitions].count(cut) == 1  # found once, not by both windows
    from longvid.annotators.segment import assemble

    windowed = assemble(stitched, probe, "v", config)
    assert windowed["transitions"] == one["transitions"]
    assert windowed["shots"] == one["shots"]
    # keyframes and curation signals (motion score, pHashes from the windows' own frames) included
    assert windowed["clips"] == one["clips"]
    assert all("motion_score" in c and "phash" in c for c in windowed["clips"])
    assert windowed["decoded_frames"] > one["decoded_frames"]  # the overlaps were decoded twice


def test_windowed_segmentation_by_plan_equals_one_pass(long_video):
    _, truth, probe = long_video
    config = SegmentConfig(detector="sparse", windows=WindowConfig(window_seconds=15, overlap_seconds=1))
    one = segment_video(truth.path, probe, "v", config)
    assert len(plan_windows(probe["num_frames"], probe["fps"], config.windows)) == 4
    windowed = segment_video_windowed(truth.path, probe, "v", config)
    assert windowed["shots"] == one["shots"] and windowed["clips"] == one["clips"]


def test_hwaccel_setting_resolves_and_falls_back_to_cpu(edited_video):
    assert resolve_hwaccel("auto", available=["cuda"], device_present=False) is None
    assert resolve_hwaccel("auto", available=["cuda"], device_present=True) == "cuda"
    assert resolve_hwaccel("auto", available=[], device_present=True) is None
    assert resolve_hwaccel("none", available=["cuda"], device_present=True) is None
    with pytest.raises(ValueError, match="decode.hwaccel"):
        resolve_hwaccel("nvdec")
    probe = probe_file(edited_video.path)
    auto = segment_video(edited_video.path, probe, "v", SegmentConfig(detector="sparse"))  # hwaccel: auto
    cpu = segment_video(edited_video.path, probe, "v",
                        SegmentConfig(detector="sparse", decode=DecodeConfig(hwaccel="none")))
    if resolve_hwaccel("auto") is None:
        assert auto == cpu  # auto picked the CPU decoder on this machine
    if not nvidia_device_present():
        with pytest.raises(ItemFailed, match="set decode.hwaccel to auto or none"):
            list(iter_thumbnails(edited_video.path, config=DecodeConfig(hwaccel="cuda")))


def test_segment_cli_reports_decoded_frames(long_video, capsys):
    name, truth, _ = long_video
    assert main(["segment", truth.path, "--json", "--detector", "sparse"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["detector"] == "sparse" and out["num_frames"] == truth.num_frames
    assert (out["decoded_frames"] < truth.num_frames) == (name == "bframes")
    assert main(["segment", truth.path, "--detector", "sparse"]) == 0
    assert "frames decoded" in capsys.readouterr().out


def test_bidir_pass_decodes_i_and_p_frames_exactly(long_video):
    """Skipping every B-frame leaves x264's I- and P-frames bit-identical to a full decode (its P-frames never
    reference a B-frame), and the share of frames it keeps is known from packet order before decoding."""
    import av
    import numpy as np

    from longvid.annotators.sparse import FrameClock, decoded_share

    name, truth, _ = long_video

    def decode(skip):
        with av.open(truth.path) as container:
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = skip
            return {f.pts: f.to_ndarray(format="gray") for f in container.decode(stream)}

    full, bidir = decode("DEFAULT"), decode("BIDIR")
    assert all(np.array_equal(bidir[pts], full[pts]) for pts in bidir)
    with av.open(truth.path) as container:
        stream = container.streams.video[0]
        share = decoded_share(container, stream, FrameClock(stream), 0, 10_000)
        first = next(container.decode(stream))  # the probe seeks back to the start
    assert first.pts == min(full)
    assert share == pytest.approx(len(bidir) / len(full))
    if name == "bframes":
        assert len(bidir) < 0.6 * len(full)
    else:
        assert len(bidir) == len(full)


def test_sparse_skip_setting_is_checked(edited_video):
    probe = probe_file(edited_video.path)
    from longvid.annotators.sparse import SparseConfig

    nonref = segment_video(edited_video.path, probe, "v", SegmentConfig(detector="sparse", sparse=SparseConfig(skip="nonref")))
    bidir = segment_video(edited_video.path, probe, "v", SegmentConfig(detector="sparse"))
    assert cuts_of(bidir) == cuts_of(nonref)
    assert bidir["decoded_frames"] <= nonref["decoded_frames"]
    with pytest.raises(ValueError, match="sparse.skip"):
        segment_video(edited_video.path, probe, "v", SegmentConfig(detector="sparse", sparse=SparseConfig(skip="all")))


def test_plan_windows_balances_rounds_over_the_cores():
    config = WindowConfig(window_seconds=300, overlap_seconds=10)
    frames = int(21.6 * 60 * 25)  # 5 windows of 300 s: 3 rounds on 2 cores
    assert len(plan_windows(frames, 25.0, config)) == 5
    balanced = plan_windows(frames, 25.0, config, cpus=2)
    assert len(balanced) == 4  # 2 rounds of 2
    assert balanced[0].core_start == 0 and balanced[-1].core_end == frames
    assert all(a.core_end == b.core_start for a, b in zip(balanced, balanced[1:]))
    assert len(plan_windows(frames, 25.0, config, cpus=8)) == 8  # one round
    assert len(plan_windows(100, 25.0, config, cpus=8)) == 1  # short: one window whatever the cores
    wide = plan_windows(int(3600 * 25), 25.0, config, cpus=128)  # an hour on a 128-CPU cluster
    assert len(wide) == 24  # one round, with cores of 150 s: not 128 windows of 28 s and 20 s of overlap each
    assert min(w.core_end - w.core_start for w in wide) >= 150 * 25


def test_sparse_scan_gives_motion_and_phashes_close_to_a_dense_decode(long_video):
    """The curation signals of a sparse scan come from its coarse frames: each clip's motion score is
    near the dense one (per frame of gap) and its keyframe hashes are within the near-duplicate radius
    of the dense clip's, so a long video still gets its near-duplicate check."""
    from longvid.annotators.phash import DEFAULT_RADIUS, hamming

    _, truth, probe = long_video
    dense = segment_video(truth.path, probe, "v", SegmentConfig(detector="fast"))
    sparse = segment_video(truth.path, probe, "v", SegmentConfig(detector="sparse"))
    by_id = {c["clip_id"]: c for c in dense["clips"]}
    compared = 0
    for clip in sparse["clips"]:
        other = by_id.get(clip["clip_id"])
        if other is None or other["start_frame"] != clip["start_frame"]:
            continue
        compared += 1
        assert abs(clip["motion_score"] - other["motion_score"]) <= 0.5 * other["motion_score"] + 0.005
        if other["phash"]:
            assert clip["phash"], clip["clip_id"]
            a = np.array([int(h, 16) for h in clip["phash"]], np.uint64)
            b = np.array([int(h, 16) for h in other["phash"]], np.uint64)
            assert hamming(a[:, None], b[None, :]).min() <= DEFAULT_RADIUS
    assert compared >= len(dense["clips"]) // 2
