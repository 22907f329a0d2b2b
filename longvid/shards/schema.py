"""The records of a LongVid dataset and the ids that name them.

Records are plain JSON-able dicts built by the helpers here; nothing in a shard is ever
unpickled. Ids are derived from their inputs so a rerun names the same things the same way.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit, urlunsplit

SCHEMA_VERSION = 1

# Ledger statuses (per source, per run).
STATUS_OK = "ok"
STATUS_FAILED = "failed"

_KEY_RE = re.compile(r"^[0-9a-f]{16}$")


def normalise_uri(uri: str) -> str:
    """Canonical form of a source URI: scheme and host lower-cased, no fragment, local paths absolute.

    A local path is kept as written (a name may end in a space); a ``file://`` URL is
    percent-decoded, as ``Path.as_uri()`` encodes it.
    """
    parts = urlsplit(uri.strip())
    if parts.scheme in ("http", "https", "s3"):
        return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))
    if parts.scheme == "file":
        from urllib.parse import unquote

        uri = unquote(urlsplit(uri.strip("\r\n")).path)
    import os

    return os.path.abspath(os.path.expanduser(uri))


def video_id_for(uri: str) -> str:
    """Stable 16-hex-digit id of a source: a hash of its normalised URI (no dots: a WebDataset key)."""
    return hashlib.sha256(normalise_uri(uri).encode("utf-8")).hexdigest()[:16]


def is_valid_key(key: str) -> bool:
    """True when ``key`` has the shape of a video id (used to reject hostile tar member names)."""
    return bool(_KEY_RE.match(key))


def clip_id_for(video_id: str, start: float, end: float) -> str:
    """Clip id: the video id and the span in whole milliseconds."""
    return f"{video_id}_{int(round(start * 1000)):09d}_{int(round(end * 1000)):09d}"


def parse_clip_id(clip_id: str) -> tuple[str, float, float]:
    video_id, start_ms, end_ms = clip_id.split("_")
    return video_id, int(start_ms) / 1000.0, int(end_ms) / 1000.0
