"""Caption layer rows from captions. The caption stages themselves (CPU frame preparation, the
model stage) are ``pipelines/annotate_stages.py``'s, reached through the caption layer kind
(``pipelines/kinds/caption.py``) by both ``annotate`` and ``ingest``'s optional caption step.
"""

from __future__ import annotations

from .base import Caption


def caption_rows(captions: list[Caption], producer: str) -> list[dict]:
    """Layer rows (``shards.layers.LAYER_SCHEMA``) of the captions that succeeded."""
    return [
        {"key": c.key, "clip_id": c.clip_id, "start": c.start, "end": c.end, "value": c.text,
         "value_type": "text", "producer": producer}
        for c in captions if c.ok
    ]
