"""The embedding kind: an image encoder (CLIP / SigLIP family, any ``AutoModel`` with image
features) embeds each clip's keyframes, mean-pooled and L2-normalised
(``--kind embedding --encoder.model MODEL``); the input of ``longvid dedup-semantic``.

Stages: ``prepare_keyframes`` (CPU: one ranged read and one decode per video, each clip's stored
keyframes resized) → ``embed`` (model actors, clips batched). Rows: ``key``, ``clip_id``,
``start``, ``end``, ``embedding`` as ``fixed_size_list<float16 | float32>[dim]``; ``layer.json``'s
producer names the encoder, the dimension and the dtype.
"""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa

from ...annotators.embed import EncoderConfig, ImageEncoder, encoder_dim
from ...shards.embeddings import embedding_schema
from ...shards.storage import Storage
from ..embed_stages import EmbedClips, PrepareKeyframes
from . import LayerKind, ModelPlacement, register


@register
class EmbeddingKind(LayerKind):
    name = "embedding"
    config_field = "encoder"
    config_type = EncoderConfig
    help = "clip embeddings (mean of the keyframes' image features, L2-normalised) from an image encoder"
    item_level = "clip"
    stage_names = ("prepare_keyframes", "embed")

    def __init__(self):
        self.settings: EncoderConfig | None = None  # with dim resolved, set by check()

    def model(self, settings: EncoderConfig) -> str:
        return settings.model

    def check(self, config) -> None:
        settings = config.encoder
        ImageEncoder(settings)  # refuses bad settings in one line
        dim = settings.dim or encoder_dim(settings.model)
        self.settings = replace(settings, dim=dim)

    @property
    def schema(self) -> pa.Schema:  # the dimension comes from the encoder: known once check() ran
        if self.settings is None:
            raise ValueError("the embedding kind's schema needs check(config) first (it reads the encoder's size)")
        return embedding_schema(self.settings.dim, self.settings.store_dtype)

    def _resolved(self, settings: EncoderConfig) -> EncoderConfig:
        return self.settings if self.settings is not None else settings

    def producer(self, settings: EncoderConfig) -> dict:
        resolved = self._resolved(settings)
        return dict(ImageEncoder(resolved).producer(), kind="embedding", dim=resolved.dim, dtype=resolved.store_dtype)

    def stages(self, settings: EncoderConfig, storage: Storage, placement: ModelPlacement) -> list:
        settings = self._resolved(settings)
        return [PrepareKeyframes(storage, settings, placement.prepare_cpus),
                EmbedClips(settings, **placement.model_stage())]

    def words(self, table: pa.Table) -> int:
        return 0  # vectors, not text
