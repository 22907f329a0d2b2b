"""``ingest``'s optional caption step: the caption layer kind (the same stages, settings and
parts as ``longvid annotate --captioner``) run over the dataset once its shards are committed.

Captions are an optional layer: they never fail a video of the ingest. The layer version gets
everything an annotate run gives it (failure rows, honest status, ``--retry-failed``, resume of
the parts a kill left undone), because it *is* an annotate run on the Ray the ingest started.
"""

from __future__ import annotations

from .ingest import IngestConfig


def caption_dataset(out: str, config: IngestConfig, log) -> dict:
    """Caption every clip of the dataset at ``out`` into ``config.caption.layer``/``version``;
    returns annotate's run summary (parts already captioned by an earlier run are skipped).
    Called by ingest while it holds the dataset's lease."""
    from .annotate import AnnotateConfig, AnnotateStagesConfig, run_annotate

    c = config.caption
    stages = AnnotateStagesConfig(prepare=config.stages.caption_frames, caption=config.stages.caption)
    annotate = AnnotateConfig(layer=c.layer, version=c.version, kind="caption", captioner=c.captioner,
                              pipeline=c.pipeline, ray=config.ray, stages=stages)
    return run_annotate(out, annotate, log=log, lease_held=True)  # within the ingest's own lease
