"""The segment stage for long videos on Ray: a video above ``segment.windows.parallel_above_seconds``
is split into windows (``annotators.windows``) that run as separate Ray tasks, then stitched.

Only the fan-out lives here; planning, per-window segmentation and stitching are the annotators'
pure functions, so the result equals ``segment_video_windowed`` in one process. Without a Ray
connection, or for a detector that cannot be windowed, it is the plain segment stage.
"""

from __future__ import annotations

import ray

from ..annotators.base import ItemFailed
from ..annotators.segment import (WINDOWED_DETECTORS, Segment, SegmentConfig, assemble, build_detector,
                                  scan_settings, thumbnail_config)
from ..annotators.windows import plan_windows, segment_window, stitch


@ray.remote
def _segment_window(media, window, config: SegmentConfig):
    # the window's own detector: detectors are stateful, one per window
    return segment_window(media, window, thumbnail_config(config), scan_settings(config), build_detector(config))


def cluster_windows(probe: dict, config: SegmentConfig, num_cpus: float, free_cpus: float | None = None) -> list:
    """The windows for this cluster: whole rounds of the window tasks that can run at once (the CPUs
    no actor pool holds, or all the cluster's, over ``num_cpus`` each)."""
    cpus = ray.cluster_resources().get("CPU", 1) if free_cpus is None else free_cpus
    slots = max(1, int(cpus // max(num_cpus, 1e-9) + 1e-9))
    return plan_windows(probe["num_frames"], probe["fps"], config.windows, slots)


def segment_parallel(media: bytes, probe: dict, video_id: str, config: SegmentConfig, num_cpus: float = 1.0,
                     free_cpus: float | None = None) -> dict:
    """:func:`annotators.segment.segment_video`'s result, computed by one Ray task per window. The
    calling task's CPU is lent back to Ray while it waits, so the windows can use it too. ``free_cpus``:
    the cluster's CPUs that actor pools do not hold (the executor's figure; default all of them), so
    that the windows fill whole rounds of the slots they can really get."""
    windows = cluster_windows(probe, config, num_cpus, free_cpus)
    media_ref = ray.put(media)  # one copy in the object store, read by every window task
    task = _segment_window.options(num_cpus=num_cpus)
    try:
        scans = ray.get([task.remote(media_ref, w, config) for w in windows])
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, ItemFailed):
            raise ItemFailed(exc.cause.reason) from None
        raise
    return assemble(stitch(scans, config.fast.min_shot_frames), probe, video_id, config)


class ParallelSegment(Segment):
    """:class:`Segment` that fans a long video out to window tasks (same name and version: the
    output is the same as one pass's)."""

    def __init__(self, config: SegmentConfig | None = None, window_cpus: float | None = None):
        super().__init__(config)
        # CPUs per window task (default: segment.windows.task_cpus)
        self.window_cpus = self.config.windows.task_cpus if window_cpus is None else window_cpus

    def windowed(self, probe: dict) -> bool:
        seconds = probe["num_frames"] / max(probe["fps"], 1e-9)
        return (self.config.detector in WINDOWED_DETECTORS and ray.is_initialized()
                and seconds > self.config.windows.parallel_above_seconds)

    def process(self, item: dict) -> dict:
        if not self.windowed(item["probe"]):
            return super().process(item)
        result = segment_parallel(item["media"], item["probe"], item["video_id"], self.config, self.window_cpus,
                                  self.free_cpus)
        return self.store(item, result)
