"""Near-duplicate scoring: each clip's keyframe pHashes looked up among the clips of earlier videos
(this run's and every earlier run's, from the clip index), so a re-encode at another resolution or
bitrate, a cropped re-upload, or a shot of one video inside another is found.

A score, never a silent drop: clips get ``near_duplicate_of`` (the earlier clip id) and
``near_duplicate_distance`` (Hamming bits of 64); the video gets the earlier video's key when at
least ``video_share`` of its clips match that video. ``drop: true`` turns it into a filter whose
dropped videos reach the ledger with the reason. The hash table is shared state the executor owns.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .base import Dropped, Resources, Stage
from .phash import DEFAULT_RADIUS, HashIndex


@dataclass
class NearDuplicateConfig:
    enabled: bool = True  # score every clip (cheap: the hashes come from the segment stage's decode)
    radius: int = DEFAULT_RADIUS  # Hamming bits (of 64) within which keyframes match; unrelated pictures differ by ~32
    video_share: float = 0.5  # the video is a near-duplicate when this share of its clips match one earlier video
    drop: bool = False  # drop near-duplicate videos (ledger action "duplicate") instead of only scoring them


class NearDuplicateIndex:
    """Clip hashes → (clip id, video key); one row per hash, ids into parallel lists."""

    def __init__(self, radius: int = DEFAULT_RADIUS):
        self.table = HashIndex(radius)
        self._earlier_ids = self._earlier_keys = None  # Arrow arrays of the clips of earlier runs
        self._earlier = 0
        self.clip_ids: list[str] = []  # clips added in this run (row = earlier count + position)
        self.video_keys: list[str] = []

    @classmethod
    def from_clip_index(cls, clips, radius: int = DEFAULT_RADIUS) -> "NearDuplicateIndex":
        """From a clip index table (``clip_id``, ``key``, ``phash`` list<uint64>), flattened in
        Arrow: no Python object per hash or per clip."""
        import pyarrow.compute as pc

        index = cls(radius)
        if clips.num_rows == 0 or "phash" not in clips.column_names:
            return index
        lists = clips["phash"].combine_chunks()
        parents = pc.list_parent_indices(lists).to_numpy()
        hashes = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.uint64)
        index._earlier_ids, index._earlier_keys = clips["clip_id"].combine_chunks(), clips["key"].combine_chunks()
        index._earlier = clips.num_rows
        index.table.add(hashes, parents.astype(np.int64))
        return index

    def _clip(self, row: int) -> tuple[str, str]:
        if row < self._earlier:
            return self._earlier_ids[row].as_py(), self._earlier_keys[row].as_py()
        return self.clip_ids[row - self._earlier], self.video_keys[row - self._earlier]

    def match_and_add(self, video_key: str, clips: list[tuple[str, list[str]]]) -> list[tuple[str | None, str | None, int | None]]:
        """For each (clip id, hex hashes): (earlier clip id, its video key, distance) of the
        nearest match in another video, or Nones; then this video's clips join the index."""
        out = []
        for _, hexes in clips:
            best: tuple[int, int] | None = None
            for h in hexes:
                ids, dist = self.table.search(int(h, 16))
                for i, d in zip(ids.tolist(), dist.tolist()):
                    if best is not None and d >= best[1]:
                        break  # nearest first: nothing better further on
                    if self._clip(i)[1] != video_key:
                        best = (i, d)
                        break
            out.append((*self._clip(best[0]), best[1]) if best else (None, None, None))
        for clip_id, hexes in clips:
            row = self._earlier + len(self.clip_ids)
            self.clip_ids.append(clip_id)
            self.video_keys.append(video_key)
            if hexes:
                self.table.add(np.array([int(h, 16) for h in hexes], np.uint64), np.full(len(hexes), row, np.int64))
        return out


class NearDuplicates(Stage):
    name = "near_duplicates"
    version = "1"
    resources = Resources(num_cpus=0.1)  # one lookup call per video (the table lives in the shared state); fuses with plan
    shared_state = ("hashes",)

    def __init__(self, config: NearDuplicateConfig | None = None):
        self.config = config or NearDuplicateConfig()

    def process(self, item: dict):
        clips = item.get("clips", [])
        matches = self.shared["hashes"].match_and_add(item["video_id"], [(c["clip_id"], c.get("phash", [])) for c in clips])
        by_video: Counter = Counter()
        distances: dict[str, list[int]] = {}
        for clip, (clip_id, video, distance) in zip(clips, matches):
            clip["near_duplicate_of"], clip["near_duplicate_distance"] = clip_id, distance
            if video is not None:
                by_video[video] += 1
                distances.setdefault(video, []).append(distance)
        item["near_duplicate"] = None
        if by_video:
            video, count = by_video.most_common(1)[0]
            if count >= self.config.video_share * len(clips):
                item["near_duplicate"] = {"of": video, "distance": int(np.median(distances[video]))}
        if self.config.drop and item["near_duplicate"]:
            nd = item["near_duplicate"]
            return Dropped(item, f"near-duplicate of {nd['of']} (pHash distance {nd['distance']})", action="duplicate",
                           detail={"duplicate_of": nd["of"]})
        return item
