"""Semantic near-duplicates over an embedding layer, as NeMo Curator's SemDedup does it: k-means
over the clip embeddings, then within each cluster the pairwise cosine similarity; a clip whose
similarity to a higher-ranked clip of the cluster is above ``1 - eps`` is a duplicate of it.

Runs on Ray Data: k-means (faiss) is fitted in the driver on a bounded sample read part by part;
assignment is ``map_batches`` over the layer's Parquet parts; the pairwise step is one
``map_groups`` call per cluster (a hash shuffle by cluster); the result is written per layer part
(``annotations/<layer>/<version>/semantic/<part>.parquet``, a second shuffle by part) so readers
join it shard by shard. The driver never holds more than the sample and one row per part.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..shards.embeddings import embedding_dataset, vectors
from ..shards.layers import layer_dir, read_layer_meta, split_layer_ref
from ..shards.semantic_columns import RESULT_SCHEMA, SEMANTIC_DIR
from ..shards.storage import Storage
from .ingest import RayConfig, connect_ray

@dataclass
class SemanticDedupConfig:
    layer: str = ""  # LAYER/VERSION of the embedding layer (`annotate --kind embedding` wrote it); required
    eps: float = 0.05  # duplicates: cosine similarity above 1 - eps (SemDedup's usual range is 0.01-0.1)
    clusters: int = 0  # k of k-means; 0: one cluster per ~1,000 clips (pairwise work ~ clips x 1,000)
    sample_rows: int = 200_000  # rows k-means is fitted on (faiss wants 39-256 per centroid; more only costs time)
    iterations: int = 20  # k-means iterations (faiss' default)
    seed: int = 0  # sample and k-means initialisation: the same seed gives the same clusters
    same_video: bool = False  # count pairs within one video (off: a long scene cut into several clips is no duplicate)
    shuffle_partitions: int = 200  # hash-shuffle partitions (Ray Data's default); fewer when there are fewer clusters or parts
    block_rows: int = 1024  # pairwise similarity in column blocks: memory = cluster rows x block_rows x 4 bytes
    ray: RayConfig = field(default_factory=RayConfig)  # which Ray to join or start (as for ingest)


class SemanticDedupError(ValueError):
    pass


def split_layer(value: str) -> tuple[str, str]:
    try:
        return split_layer_ref(value, "--layer (an embedding layer)", "embed/v1")
    except ValueError as exc:
        raise SemanticDedupError(str(exc)) from None


def check(config: SemanticDedupConfig) -> None:
    if not 0.0 < config.eps < 1.0:
        raise SemanticDedupError(f"--eps must be in (0, 1), got {config.eps}")
    if config.clusters < 0 or config.sample_rows < 1 or config.iterations < 1 or config.block_rows < 1:
        raise SemanticDedupError("--clusters >= 0, --sample-rows, --iterations and --block-rows >= 1, please")


# -- k-means on a sample -------------------------------------------------------------------------
def sample_vectors(dataset, wanted: int, seed: int) -> np.ndarray:
    """Up to ``wanted`` embeddings, drawn from the parts in a random order (an even share of each
    part read, at random within it), so memory stays ``wanted x dim`` for any layer size."""
    rng = np.random.default_rng(seed)
    fragments = list(dataset.get_fragments())
    per_part = max(1, math.ceil(wanted / max(1, len(fragments))))
    taken, have = [], 0
    for i in rng.permutation(len(fragments)):
        table = fragments[i].to_table(columns=["embedding"])
        rows = rng.choice(table.num_rows, size=min(per_part, table.num_rows), replace=False)
        taken.append(vectors(table.take(pa.array(rows, pa.int64()))))
        have += len(rows)
        if have >= wanted:
            break
    return np.concatenate(taken)[:wanted] if taken else np.zeros((0, 0), np.float32)


def fit_centroids(sample: np.ndarray, clusters: int, iterations: int, seed: int) -> np.ndarray:
    """Spherical k-means (faiss) on L2-normalised vectors: ``[clusters, dim]`` unit centroids."""
    import faiss

    sample = np.ascontiguousarray(sample, np.float32)
    k = max(1, min(clusters, len(sample)))
    if k == 1:
        centroid = sample.mean(axis=0, keepdims=True)
    else:
        kmeans = faiss.Kmeans(sample.shape[1], k, niter=iterations, seed=seed, spherical=True, verbose=False,
                              min_points_per_centroid=1)
        kmeans.train(sample)
        centroid = kmeans.centroids
    return (centroid / np.maximum(np.linalg.norm(centroid, axis=1, keepdims=True), 1e-12)).astype(np.float32)


# -- Ray Data UDFs (each sees one batch or one group: bounded) -------------------------------------
def assign_clusters(batch: pa.Table, centroids: np.ndarray) -> pa.Table:
    """Adds ``semantic_cluster`` (nearest centroid by cosine) and ``part`` (the file's part name)."""
    nearest = np.argmax(vectors(batch) @ centroids.T, axis=1).astype(np.int32)
    parts = pc.replace_substring_regex(batch.column("path"), r"^.*/|\.parquet$", "")
    return batch.drop_columns(["path"]).append_column("semantic_cluster", pa.array(nearest)).append_column("part", parts)


def rank_order(group: pa.Table) -> np.ndarray:
    """Row order of a cluster, best first: the longest clip, then the earliest (part = shard order,
    then video key and start): the one a group of duplicates keeps."""
    duration = pc.subtract(group["end"], group["start"])
    keyed = pa.table({"neg": pc.negate(duration), "part": group["part"], "key": group["key"], "start": group["start"],
                      "clip_id": group["clip_id"]})
    return pc.sort_indices(keyed, sort_keys=[(n, "ascending") for n in keyed.column_names]).to_numpy()


def best_earlier_match(x: np.ndarray, video: np.ndarray | None, block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row j (rows in rank order): the row i < j most similar to it and that similarity
    (-inf for row 0). Pairs of the same ``video`` code are skipped when ``video`` is given."""
    n = len(x)
    best = np.full(n, -np.inf, np.float32)
    arg = np.full(n, -1, np.int64)
    for b0 in range(1, n, block_rows):
        b1 = min(n, b0 + block_rows)
        sims = x[:b1] @ x[b0:b1].T  # [b1, block]: every earlier row against this block's rows
        rows = np.arange(b1)[:, None]
        cols = np.arange(b0, b1)[None, :]
        blocked = rows >= cols
        if video is not None:
            blocked |= video[:b1, None] == video[None, b0:b1]
        sims[blocked] = -np.inf
        arg[b0:b1] = np.argmax(sims, axis=0)
        best[b0:b1] = sims[arg[b0:b1], np.arange(b1 - b0)]
    return arg, best


def cluster_duplicates(group: pa.Table, eps: float, same_video: bool, block_rows: int) -> pa.Table:
    """One cluster's rows → RESULT_SCHEMA rows plus ``part`` (where each is written)."""
    group = group.take(pa.array(rank_order(group), pa.int64()))
    x = vectors(group)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # float16 storage: renormalise
    video = None if same_video else pc.dictionary_encode(group["key"]).combine_chunks().indices.to_numpy()
    arg, best = best_earlier_match(x, video, block_rows)
    duplicate = best > (1.0 - eps)
    match = pa.array(np.where(duplicate, arg, 0), pa.int64())
    mask = pa.array(~duplicate)
    of = pc.if_else(mask, pa.scalar(None, pa.string()), group["clip_id"].take(match))
    of_key = pc.if_else(mask, pa.scalar(None, pa.string()), group["key"].take(match))
    similarity = pa.array(np.where(duplicate, best, 0).astype(np.float32), mask=~duplicate)
    return pa.table({"clip_id": group["clip_id"], "key": group["key"], "semantic_cluster": group["semantic_cluster"],
                     "semantic_duplicate_of": of, "semantic_duplicate_key": of_key, "semantic_similarity": similarity,
                     "part": group["part"]})


def write_part(group: pa.Table, root: str, base: str) -> pa.Table:
    """Writes one layer part's results (sorted by clip id) and returns its counts."""
    part = group["part"][0].as_py()
    table = group.drop_columns(["part"]).sort_by("clip_id").cast(RESULT_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    Storage.for_uri(root).write_bytes(f"{base}/{part}.parquet", buf.getvalue())
    dups = table.num_rows - table["semantic_duplicate_of"].null_count
    return pa.table({"part": [part], "clips": [table.num_rows], "duplicates": [dups]})


# -- the run ---------------------------------------------------------------------------------------
def run_semantic_dedup(dataset: str, config: SemanticDedupConfig, log=print) -> dict:
    """Cluster ``config.layer``'s embeddings, mark duplicates, write ``semantic/`` beside its parts."""
    import ray

    check(config)
    layer, version = split_layer(config.layer)
    storage = Storage.for_uri(dataset)
    data = embedding_dataset(storage, layer, version)
    total = data.count_rows()
    if total == 0:
        raise SemanticDedupError(f"embedding layer {config.layer} has no rows")
    k = config.clusters or max(1, round(total / 1000))
    started = time.time()
    sample = sample_vectors(data, config.sample_rows, config.seed)
    centroids = fit_centroids(sample, k, config.iterations, config.seed)
    log(f"dedup-semantic {config.layer}: {total} clips, k-means k={len(centroids)} on {len(sample)} sampled, "
        f"eps={config.eps}")
    base = f"{layer_dir(layer, version)}/{SEMANTIC_DIR}"
    ray_started = connect_ray(config.ray)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = config.ray.progress_bars
        counts = _run_on_ray(storage, data, centroids, config, base)
    finally:
        if ray_started:
            ray.shutdown()
    summary = {"layer": config.layer, "clips": int(sum(counts["clips"])), "duplicates": int(sum(counts["duplicates"])),
               "clusters": len(centroids), "eps": config.eps, "parts": len(counts["part"]),
               "seconds": round(time.time() - started, 3)}
    meta = {"kind": "semantic_dedup", "source": read_layer_meta(storage, layer, version).get("producer"),
            "settings": {"eps": config.eps, "clusters": len(centroids), "sample_rows": len(sample), "seed": config.seed,
                         "same_video": config.same_video, "iterations": config.iterations},
            "counts": {k: summary[k] for k in ("clips", "duplicates", "parts")}, "updated": time.time()}
    storage.write_bytes(f"{base}/semantic.json", json.dumps(meta, indent=2, sort_keys=True).encode())
    log(json.dumps(summary, sort_keys=True))
    return summary


def _run_on_ray(storage: Storage, data, centroids: np.ndarray, config: SemanticDedupConfig, base: str) -> dict:
    import ray

    from ..shards.catalog import arrow_filesystem

    filesystem, _ = arrow_filesystem(storage)
    ds = ray.data.read_parquet(list(data.files), filesystem=filesystem, include_paths=True,
                               columns=["key", "clip_id", "start", "end", "embedding"])
    # rows: key, clip_id, start, end, embedding, semantic_cluster, part
    ds = ds.map_batches(assign_clusters, fn_kwargs={"centroids": centroids}, batch_format="pyarrow",
                        batch_size=4096)
    # rows: RESULT_SCHEMA + part, one group per cluster
    shuffle_parts = max(1, min(config.shuffle_partitions, len(centroids)))
    ds = ds.groupby("semantic_cluster", num_partitions=shuffle_parts).map_groups(
        cluster_duplicates, fn_kwargs={"eps": config.eps, "same_video": config.same_video,
                                       "block_rows": config.block_rows}, batch_format="pyarrow")
    # rows: one per layer part written (part, clips, duplicates)
    ds = ds.groupby("part", num_partitions=max(1, min(config.shuffle_partitions, len(data.files)))).map_groups(write_part, fn_kwargs={"root": storage.root, "base": base},
                                       batch_format="pyarrow")
    counts = ds.to_arrow_refs()
    table = pa.concat_tables(ray.get(counts)) if counts else pa.table({"part": [], "clips": [], "duplicates": []})
    return table.to_pydict()  # one row per part: bounded by the layer's part count
