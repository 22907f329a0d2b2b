"""Captioning as pipeline stages: a CPU stage that prepares each clip's frames and a model stage
that captions them (loading the model once per worker in ``setup``).

Both follow the :class:`~longvid.annotators.base.Stage` contract so ingestion can run them as its
optional caption step; ``pipelines/annotate.py`` uses the same pieces on existing shards.
"""

from __future__ import annotations

from ..base import ItemFailed, Resources, Stage
from .base import Caption, Captioner, CaptionerConfig, producer_id
from .frames import ClipFrames, prepare_clips


def caption_rows(captions: list[Caption], producer: str) -> list[dict]:
    """Layer rows (``shards.layers.LAYER_SCHEMA``) of the captions that succeeded."""
    return [
        {"key": c.key, "clip_id": c.clip_id, "start": c.start, "end": c.end, "value": c.text,
         "value_type": "text", "producer": producer}
        for c in captions if c.ok
    ]


class PrepareCaptionFrames(Stage):
    """CPU: ``item["media"]`` + ``item["clips"]`` → ``item["caption_inputs"]`` (frames per clip)."""

    name = "caption_frames"
    version = "1"
    resources = Resources(num_cpus=1.0)  # one decode per video

    def __init__(self, config: CaptionerConfig, num_cpus: float = 1.0):
        self.config = config
        self.resources = Resources(num_cpus=num_cpus)

    def process(self, item: dict) -> dict:
        c = self.config
        key = item["video_id"]
        fps = item["probe"]["fps"] if "probe" in item else item["video"]["fps"]
        clips = prepare_clips(key, item["media"], item.get("clips", []), fps, c.frame_source, c.max_frames,
                              c.longest_edge)
        item["caption_inputs"] = [clip.to_row() for clip in clips]
        return item


class CaptionStage(Stage):
    """Model: captions every clip of each item into ``item["annotations"][layer][version]``
    (``producer``, ``producer_id``, layer ``rows``, and ``failures`` with reasons).

    Uses ``item["caption_inputs"]`` when a preparation stage ran before it, else decodes inline
    (slower: the model waits on the decode). A caption failure never fails the video itself:
    captions are an optional layer, and the failure is listed for the ledger.
    """

    name = "caption"
    version = Captioner.version

    def __init__(self, config: CaptionerConfig, layer: str = "caption", version: str = "v1",
                 num_gpus: float = 1.0, num_cpus: float = 1.0, actors: int = 1, batch_size: int = 8):
        self.config = config
        self.layer = layer
        self.layer_version = version
        self.resources = Resources(num_cpus=num_cpus, num_gpus=num_gpus)
        self.actors, self.batch_size = actors, batch_size
        self.captioner: Captioner | None = None
        self._producer: dict | None = None

    def setup(self) -> None:
        self.captioner = Captioner(self.config)
        self.captioner.setup()
        self._producer = self.captioner.producer()

    def process(self, item: dict) -> dict:
        return self.process_batch([item])[0]

    def _inputs(self, item: dict) -> tuple[list[ClipFrames], list[dict]]:
        rows = item.pop("caption_inputs", None)
        if rows is None:
            try:
                rows = PrepareCaptionFrames(self.config).process(item).pop("caption_inputs")
            except ItemFailed as exc:
                return [], [{"clip_id": None, "reason": exc.reason}]
        return [ClipFrames.from_row(r) for r in rows], []

    def process_batch(self, items: list[dict]) -> list[dict]:
        """Caption the clips of all ``items`` in one engine call; every item is kept (a caption
        failure is listed in the layer, it does not fail the video)."""
        if self.captioner is None:
            raise RuntimeError("CaptionStage.setup() must run before process()")
        inputs = [self._inputs(item) for item in items]
        captions = iter(self.captioner.caption([c for clips, _ in inputs for c in clips]))
        pid = producer_id(self._producer)
        for item, (clips, failures) in zip(items, inputs):
            mine = [next(captions) for _ in clips]
            failures = failures + [{"clip_id": c.clip_id, "reason": c.error} for c in mine if not c.ok]
            layer = item.setdefault("annotations", {}).setdefault(self.layer, {})
            layer[self.layer_version] = {"producer": self._producer, "producer_id": pid,
                                         "rows": caption_rows(mine, pid), "failures": failures}
        return items
