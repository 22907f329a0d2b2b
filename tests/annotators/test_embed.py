"""The image encoder (tiny random CLIP and SigLIP built on the spot, loaded through AutoModel) and
the SemDedup arithmetic on synthetic embeddings (no Ray: the per-cluster function alone)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from longvid.annotators.embed import EncoderConfig, ImageEncoder, encoder_dim, pool_clips
from longvid.annotators.tiny_models import build_tiny_clip, build_tiny_siglip
from longvid.pipelines.semantic_dedup import best_earlier_match, cluster_duplicates
from longvid.shards.embeddings import embedding_table
from longvid.synthetic import ShotRenderer, ShotSpec


@pytest.fixture(scope="module", params=["clip", "siglip"])
def encoder(request, tmp_path_factory):
    build = build_tiny_clip if request.param == "clip" else build_tiny_siglip
    path = build(str(tmp_path_factory.mktemp(request.param) / "model"))
    enc = ImageEncoder(EncoderConfig(model=path, batch_size=3, dim=encoder_dim(path)))
    enc.setup()
    return request.param, enc


def frames(seed: int, n: int = 2, width: int = 96, height: int = 54) -> np.ndarray:
    render = ShotRenderer(ShotSpec(10, "drift", seed=seed), width, height)
    return np.stack([np.clip(render.frame(t), 0, 255).astype(np.uint8) for t in range(n)])


def test_clips_of_any_size_embed_to_unit_vectors_of_the_declared_size(encoder):
    name, enc = encoder
    clips = [frames(1), frames(2, n=3, width=64, height=48), frames(1)]  # 7 images: 3 batches of <= 3
    out = enc.embed_clips(clips)
    assert out.shape == (3, 32 if name == "clip" else 64)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.allclose(out[0], out[2], atol=1e-5)  # same frames, same vector, whatever the batch
    assert out[0] @ out[1] < 0.999


def test_a_clip_is_the_mean_of_its_normalised_frames():
    a, b = np.array([[3.0, 0.0]]), np.array([[0.0, 1.0]])
    pooled = pool_clips(np.concatenate([a, b, a]), [2, 1])
    assert np.allclose(pooled[0], [np.sqrt(0.5), np.sqrt(0.5)]) and np.allclose(pooled[1], [1.0, 0.0])


def test_bad_settings_are_refused_in_one_line():
    with pytest.raises(ValueError, match="--encoder"):
        ImageEncoder(EncoderConfig(model=""))
    with pytest.raises(ValueError, match="store_dtype"):
        ImageEncoder(EncoderConfig(model="x", store_dtype="int8"))


def unit(rng, n, dim=16):
    v = rng.normal(size=(n, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def group(vectors, keys, durations, part="shard-000000-0000"):
    rows = [{"key": k, "clip_id": f"{k}-{i}", "start": 0.0, "end": d, "embedding": v}
            for i, (v, k, d) in enumerate(zip(vectors, keys, durations))]
    table = embedding_table(rows, dtype="float32")
    n = table.num_rows
    return table.append_column("semantic_cluster", pa.array(np.zeros(n, np.int32))).append_column(
        "part", pa.array([part] * n))


def test_near_copies_point_at_the_longest_and_distinct_clips_stay():
    rng = np.random.default_rng(0)
    base = unit(rng, 4)
    near = base[0] + 0.01 * rng.normal(size=16)
    far = base[1] + 0.5 * rng.normal(size=16)  # same neighbourhood, not a duplicate at eps 0.05
    vectors = np.stack([base[0], base[1], base[2], base[3], near / np.linalg.norm(near), far / np.linalg.norm(far)])
    out = cluster_duplicates(group(vectors, ["a", "b", "c", "d", "e", "f"], [2, 2, 2, 2, 5, 2]), 0.05, False, 2)
    rows = {r["clip_id"]: r for r in out.to_pylist()}
    assert rows["a-0"]["semantic_duplicate_of"] == "e-4"  # e is longer: e is kept, a points at it
    assert rows["e-4"]["semantic_duplicate_of"] is None and rows["e-4"]["semantic_similarity"] is None
    assert rows["a-0"]["semantic_similarity"] > 0.95 and rows["a-0"]["semantic_duplicate_key"] == "e"
    assert all(rows[c]["semantic_duplicate_of"] is None for c in ("b-1", "c-2", "d-3", "f-5"))


def test_pairs_inside_one_video_count_only_when_asked():
    rng = np.random.default_rng(1)
    v = unit(rng, 1)[0]
    table = group(np.stack([v, v, unit(rng, 1)[0]]), ["a", "a", "b"], [2, 2, 2])
    assert cluster_duplicates(table, 0.05, False, 8)["semantic_duplicate_of"].null_count == 3
    assert cluster_duplicates(table, 0.05, True, 8)["semantic_duplicate_of"].to_pylist() == [None, "a-0", None]


def test_blocked_pairwise_equals_the_full_matrix():
    rng = np.random.default_rng(2)
    x = unit(rng, 50).astype(np.float32)
    video = rng.integers(0, 10, 50)
    full = x @ x.T
    full[np.tril_indices(50)] = -np.inf  # only earlier rows (i < j) count for column j
    full[video[:, None] == video[None, :]] = -np.inf
    for block in (1, 7, 64):
        arg, best = best_earlier_match(x, video, block)
        assert np.allclose(best[1:], full.max(axis=0)[1:]) and np.all(arg[1:] == full.argmax(axis=0)[1:])
