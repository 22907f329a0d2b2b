"""The embedding layer and semantic near-duplicates end to end on a real local Ray: an ingested
dataset holding an original video, a re-encode of it at half the size and bitrate, and unrelated
videos; ``annotate --kind embedding`` with a tiny random SigLIP (built on the spot, loaded through
``AutoModel``); ``dedup-semantic`` over the layer.

The encoder is random: the assertions are about structure (rows, shapes, unit norms, the layer's
meta) and about what survives any continuous encoder: a re-encode's clip embeds like its original,
so the pair is a duplicate; clips of unrelated content are not duplicates of the original's."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from longvid.annotators.embed import EncoderConfig
from longvid.annotators.tiny_models import build_tiny_siglip
from longvid.cli import main
from longvid.pipelines.annotate import AnnotateConfig, PipelineConfig, run_annotate
from longvid.pipelines.ingest import RayConfig
from longvid.pipelines.semantic_dedup import SemanticDedupConfig, run_semantic_dedup
from longvid.shards import read_clips_index
from longvid.shards.embeddings import embedding_dataset, vectors
from longvid.shards.layers import layer_parts, read_layer_meta
from longvid.shards.schema import video_id_for
from longvid.shards.storage import LocalStorage
from longvid.synthetic import encode_frames
from tests.pipelines.helpers import write_manifest
from tests.pipelines.test_ingest import small_config
from tests.pipelines.test_near_duplicates import H, W, resized, shot_frames


@pytest.fixture(scope="module")
def corpus(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    original = [f for s in (11, 12, 13) for f in shot_frames(s)]
    videos = {
        "original": (original, W, H),
        "reencoded": ([resized(f, 160, 90) for f in original], 160, 90),
        "other": ([f for s in (21, 22) for f in shot_frames(s)], W, H),
        "unrelated": ([f for s in (41, 42) for f in shot_frames(s)], W, H),
    }
    for name, (frames, w, h) in videos.items():
        encode_frames(str(root / f"{name}.mp4"), frames, 25, w, h)
    out = str(root / "ds")
    from longvid.pipelines.ingest import run_ingest

    manifest = write_manifest(str(root / "m.jsonl"), [str(root / f"{n}.mp4") for n in videos])
    assert run_ingest(manifest, out, small_config()).failed == 0
    encoder = build_tiny_siglip(str(root / "siglip"), seed=0)
    keys = {name: video_id_for(str(root / f"{name}.mp4")) for name in videos}
    return {"root": out, "keys": keys, "encoder": encoder}


@pytest.fixture(scope="module")
def embed_v1(corpus):
    config = AnnotateConfig(layer="embed", version="v1", kind="embedding", encoder=EncoderConfig(model=corpus["encoder"]),
                            pipeline=PipelineConfig(num_cpus=0.5, prepare_cpus=0.5, batch_size=4, videos_per_part=2),
                            ray=RayConfig(progress_bars=False))
    return run_annotate(corpus["root"], config, log=lambda *_: None)


def layer_rows(root: str):
    return embedding_dataset(LocalStorage(root), "embed", "v1").to_table()


def test_every_clip_gets_one_unit_embedding_and_the_layer_says_how(corpus, embed_v1):
    storage = LocalStorage(corpus["root"])
    clips = read_clips_index(storage)
    table = layer_rows(corpus["root"])
    assert embed_v1["failures"] == 0 and embed_v1["status"] == "complete"
    assert sorted(table["clip_id"].to_pylist()) == sorted(clips["clip_id"].to_pylist())
    embedding_type = table.schema.field("embedding").type
    assert embedding_type.list_size == 64 and str(embedding_type.value_type) == "halffloat"
    norms = np.linalg.norm(vectors(table), axis=1)
    assert np.allclose(norms, 1.0, atol=2e-3)
    meta = read_layer_meta(storage, "embed", "v1")
    assert meta["kind"] == "embedding"
    assert meta["producer"]["encoder"] == corpus["encoder"] and meta["producer"]["dim"] == 64
    assert meta["producer"]["dtype"] == "float16"
    assert len(layer_parts(storage, "embed", "v1")) == 2  # 4 videos, 2 per part


def test_a_reencode_is_a_semantic_duplicate_and_unrelated_clips_are_not(corpus, embed_v1):
    summary = run_semantic_dedup(corpus["root"], SemanticDedupConfig(layer="embed/v1", eps=0.05, clusters=2,
                                                                     ray=RayConfig(progress_bars=False)),
                                 log=lambda *_: None)
    storage = LocalStorage(corpus["root"])
    result = _read_results(storage)
    keys = corpus["keys"]
    assert summary["clips"] == result.num_rows == read_clips_index(storage).num_rows
    rows = {r["clip_id"]: r for r in result.to_pylist()}  # a dozen clips: bounded
    family = {keys["original"], keys["reencoded"]}
    originals = [c for c, r in rows.items() if r["key"] == keys["original"]]
    copies = [c for c, r in rows.items() if r["key"] == keys["reencoded"]]
    assert len(originals) == len(copies) == 3
    for mine in copies + originals:  # each pair: one of them points at the other, in its cluster
        r = rows[mine]
        if r["semantic_duplicate_of"] is not None:
            other = rows[r["semantic_duplicate_of"]]
            assert other["key"] in family - {r["key"]}
            assert other["semantic_cluster"] == r["semantic_cluster"]
            assert r["semantic_similarity"] > 0.95
    assert sum(rows[c]["semantic_duplicate_of"] is not None for c in originals + copies) == 3
    for clip_id, r in rows.items():  # unrelated content: never a duplicate of the original family, nor kept for it
        if r["key"] not in family:
            assert r["semantic_duplicate_key"] not in family
    assert summary["duplicates"] == sum(r["semantic_duplicate_of"] is not None for r in rows.values())
    meta = json.loads(storage.read_bytes("annotations/embed/v1/semantic/semantic.json"))
    assert meta["settings"]["eps"] == 0.05 and meta["counts"]["clips"] == result.num_rows


def _read_results(storage: LocalStorage):
    import pyarrow as pa

    paths = [p for p in storage.list("annotations/embed/v1/semantic") if p.endswith(".parquet")]
    return pa.concat_tables([pq.read_table(storage.uri(p)) for p in paths])


def test_cli_refuses_a_layer_that_is_not_an_embedding_layer(corpus, embed_v1, capsys):
    code = main(["dedup-semantic", corpus["root"], "--layer", "nope/v1"])
    assert code == 2
    assert "no embedding layer nope/v1" in capsys.readouterr().err


@pytest.fixture(scope="module")
def semantic_v1(corpus, embed_v1):
    summary = run_semantic_dedup(corpus["root"], SemanticDedupConfig(layer="embed/v1", eps=0.05, clusters=1,
                                                                     ray=RayConfig(progress_bars=False)),
                                 log=lambda *_: None)
    return summary, _read_results(LocalStorage(corpus["root"]))


def test_the_stream_filters_semantic_duplicates_at_read_time(corpus, semantic_v1):
    from longvid.shards.stream import ShardStream, SourceSpec, StreamConfig
    from longvid.shards.where import WhereError

    _, result = semantic_v1
    dups = {r["clip_id"] for r in result.to_pylist() if r["semantic_duplicate_of"] is not None}
    assert dups
    root = corpus["root"]

    def keys(unit: str, where: str, layer: str = "embed/v1") -> list[str]:
        spec = SourceSpec(root, where=where, semantic_layer=layer)
        config = StreamConfig(sources=[spec], unit=unit, decode=False, epochs=1, stage="stage1")
        return sorted(s["__key__"] for s in ShardStream(config))

    everything = keys("clip", "duration > 0")
    kept = keys("clip", "semantic_duplicate_of is null and duration > 0")
    assert sorted(set(everything) - set(kept)) == sorted(dups)
    assert keys("clip", "semantic_similarity > 0.95") == sorted(dups)
    copies = {r["key"] for r in result.to_pylist() if r["semantic_duplicate_of"] is not None}
    assert keys("video", "semantic_duplicates = 0") == sorted({r["key"] for r in result.to_pylist()} - copies)
    with pytest.raises(WhereError, match="semantic_layer"):
        keys("clip", "semantic_duplicate_of is null", layer="")
    with pytest.raises(FileNotFoundError, match="dedup-semantic"):
        keys("clip", "semantic_duplicate_of is null", layer="caption/v9")


def test_export_filters_videos_by_their_semantic_duplicates(corpus, semantic_v1):
    from longvid.pipelines.export import ExportError, _compile_where, read_group_rows, text_layers
    from longvid.shards.catalog import open_index

    _, result = semantic_v1
    storage = LocalStorage(corpus["root"])
    copies = {r["key"] for r in result.to_pylist() if r["semantic_duplicate_of"] is not None}
    where = _compile_where("semantic_duplicate_share < 0.5", storage, "embed/v1")
    index = open_index(storage)
    rows = read_group_rows(index, sorted(index.shard_names), where, "embed/v1")
    exported = {v["key"] for videos, _ in rows.values() for v in videos}
    assert exported == set(corpus["keys"].values()) - copies
    assert all(c["key"] in exported for _, clips in rows.values() for c in clips)
    with pytest.raises(ExportError, match="--semantic-layer"):
        _compile_where("semantic_duplicates = 0", storage, None)
    assert "embed" not in text_layers(storage)  # vectors are never read as conversation turns


def test_the_cli_takes_the_kind_and_the_encoder_and_resumes_a_finished_version(corpus, embed_v1, capsys):
    args = ["annotate", corpus["root"], "--kind", "embedding", "--layer", "embed", "--version", "v1",
            "--encoder.model", corpus["encoder"], "--pipeline.batch-size", "4", "--pipeline.videos-per-part", "2"]
    assert main(args) == 0
    assert "2 already committed (resumed)" in capsys.readouterr().out
    assert main(args + ["--encoder.frames-per-clip", "2"]) == 2  # another recipe: a new version, please
    assert "different recipe" in capsys.readouterr().err
