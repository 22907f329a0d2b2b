"""The sampling-plan stage: dynamic_fps1 frame plans for the video and each clip, and the
video record that goes into the shard's JSON member."""

from __future__ import annotations

from ..shards.sampling import frame_plan
from ..shards.schema import SCHEMA_VERSION, STATUS_OK
from .base import Resources, Stage


def video_record(item: dict) -> dict:
    """The ``KEY.json`` content of a fully processed item."""
    probe = item["probe"]
    source = item["source"]
    video = {
        "video_id": item["video_id"],
        "source_uri": source["url"],
        "source_metadata": source.get("metadata") or {},
        "sha256": item["sha256"],
        "status": STATUS_OK,
        **{k: probe[k] for k in ("duration", "fps", "num_frames", "width", "height", "codec", "container",
                                 "has_audio", "audio_codec", "bytes", "media_ext")},
        # display rotation, degrees counter-clockwise (probe.py); width/height stay the coded picture's
        "rotation": int(probe.get("rotation") or 0),
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "video": video,
        "shots": item["shots"],
        "transitions": item.get("transitions", []),
        "clips": item["clips"],
        "plan": item["plan"],
        "producers": item.get("producers", {}),
        "near_duplicate": item.get("near_duplicate"),  # {"of": earlier video key, "distance"} or None
    }


class Plan(Stage):
    name = "plan"
    version = "1"
    resources = Resources(num_cpus=0.1)  # arithmetic; near_duplicates declares the same, so the two fuse

    def process(self, item: dict) -> dict:
        fps = item["probe"]["fps"]
        item["plan"] = frame_plan(item["probe"]["num_frames"], fps)
        for clip in item["clips"]:
            clip["plan"] = frame_plan(clip["end_frame"] - clip["start_frame"], fps, start_frame=clip["start_frame"])
        return item
