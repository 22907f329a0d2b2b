"""The media files an llava export references: whole videos copied out of their shards and clip
files cut from them, one Ray task per video (one ranged read, one decode for all its clips).

Every file is checked (the copy against the media sha256 in the video's record) and appears
under its final name only when complete; a file already there with the right size is kept, so a
rerun writes only what is missing. Never writes into the dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid

import ray

from ..annotators.clip_media import ClipSpan, write_clip_files
from ..shards.reader import split_member_name
from ..shards.storage import Storage

COPY_CHUNK = 64 * 1024 * 1024  # bytes per ranged read: bounded memory while copying a long video
VIDEO_DIR = "videos"
CLIP_DIR = "clips"
MAX_IN_FLIGHT = 64  # media tasks queued at once: bounds driver memory, keeps every CPU busy


def video_file(video: dict) -> str:
    """``videos/<key>.<ext>``: the member's own extension (mp4 unless ingested with write.media=source)."""
    key, ext = split_member_name(video["media_member"])
    return f"{VIDEO_DIR}/{key}.{ext}"


def clip_file(clip_id: str) -> str:
    return f"{CLIP_DIR}/{clip_id}.mp4"


def _media_sha256(storage: Storage, video: dict) -> str:
    """The sha256 of the media member: the record's ``media_sha256`` (a remuxed member), else the
    source's ``sha256`` (members kept as source bytes)."""
    record = json.loads(storage.read_range(video["shard"], video["json_offset"], video["json_size"]))
    return record["video"].get("media_sha256") or video["sha256"]


def read_media(storage: Storage, video: dict) -> bytes:
    """A video's member bytes (ranged reads), checked against its recorded sha256."""
    chunks, done = [], 0
    while done < video["media_size"]:
        chunk = storage.read_range(video["shard"], video["media_offset"] + done,
                                   min(COPY_CHUNK, video["media_size"] - done))
        if not chunk:
            raise OSError(f"{video['shard']} ends before the video's {video['media_size']} bytes")
        chunks.append(chunk)
        done += len(chunk)
    media = b"".join(chunks)
    if hashlib.sha256(media).hexdigest() != _media_sha256(storage, video):
        raise OSError(f"sha256 of the bytes in {video['shard']} does not match the video's record")
    return media


def _present(path: str, size: int | None = None) -> bool:
    return os.path.exists(path) and (size is None or os.path.getsize(path) == size)


def write_video_media(root: str, video: dict, clips: list[dict], out_dir: str, whole: bool) -> dict:
    """The files of one video: ``videos/<key>.mp4`` when ``whole``, and one file per clip.

    Returns counts: ``{"videos": {"written"|"present": n}, "clips": {"copy"|"reencode"|"present": n}}``.
    """
    storage = Storage.for_uri(root)
    result = {"videos": {}, "clips": {}}
    target = os.path.join(out_dir, video_file(video))
    need_whole = whole and not _present(target, video["media_size"])
    spans = [ClipSpan(c["clip_id"], c["start_frame"], c["end_frame"], os.path.join(out_dir, clip_file(c["clip_id"])))
             for c in clips]
    todo = [s for s in spans if not _present(s.target)]  # written by rename: present means complete
    if whole and not need_whole:
        result["videos"]["present"] = 1
    if len(spans) > len(todo):
        result["clips"]["present"] = len(spans) - len(todo)
    if not need_whole and not todo:
        return result
    media = read_media(storage, video)
    if need_whole:
        tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(media)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        result["videos"]["written"] = 1
    for how in write_clip_files(media, todo).values():
        result["clips"][how] = result["clips"].get(how, 0) + 1
    return result


_remote_write = ray.remote(num_cpus=1, max_retries=2)(write_video_media)


class MediaJobs:
    """Runs :func:`write_video_media` per video on Ray, a bounded number in flight."""

    def __init__(self, root: str, out_dir: str):
        self.root, self.out_dir = root, out_dir
        self.in_flight: dict = {}  # ObjectRef → video key
        self.totals = {"videos": {}, "clips": {}}
        self.failed: dict[str, str] = {}
        for folder in (VIDEO_DIR, CLIP_DIR):
            os.makedirs(os.path.join(out_dir, folder), exist_ok=True)

    def submit(self, video: dict, clips: list[dict], whole: bool) -> None:
        while len(self.in_flight) >= MAX_IN_FLIGHT:
            self._collect(1)
        ref = _remote_write.remote(self.root, video, clips, self.out_dir, whole)
        self.in_flight[ref] = video["key"]

    def _collect(self, num: int) -> None:
        done, _ = ray.wait(list(self.in_flight), num_returns=min(num, len(self.in_flight)))
        for ref in done:
            key = self.in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # one bad video is reported; the others still come out
                self.failed[key] = str(getattr(exc, "cause", None) or exc).splitlines()[-1]
                continue
            for kind, counts in result.items():
                for name, n in counts.items():
                    self.totals[kind][name] = self.totals[kind].get(name, 0) + n

    def finish(self) -> dict:
        while self.in_flight:
            self._collect(len(self.in_flight))
        return {**self.totals, "failed": self.failed}
