"""Pure per-item logic (no Ray): fetch, probe, decode, shots, clips, keyframes, plans.

Each stage is a :class:`~longvid.annotators.base.Stage` with a name, version and resources.
"""

from .base import ItemFailed, Resources, Stage
from .clips import ClipConfig, make_clips
from .fetch import Fetch, FetchConfig
from .plan import Plan, video_record
from .probe import Probe, probe_bytes, probe_file
from .segment import Segment, SegmentConfig, segment_video

__all__ = [
    "ClipConfig", "Fetch", "FetchConfig", "ItemFailed", "Plan", "Probe", "Resources", "Segment",
    "SegmentConfig", "Stage", "make_clips", "probe_bytes", "probe_file", "segment_video", "video_record",
]
