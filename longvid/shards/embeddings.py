"""Embedding layers: ``annotations/<layer>/<version>/<part>.parquet`` like every layer, with rows
``key`` (video), ``clip_id``, ``start``, ``end`` and ``embedding`` as ``fixed_size_list<float16 |
float32>[dim]``; ``layer.json`` records the encoder, the dimension and the dtype.

Readers go through :func:`embedding_dataset` (``pyarrow.dataset`` over the parts, read in record
batches): nothing here holds a whole layer in memory or builds a Python object per row but
:func:`embedding_table` of one part's rows.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .layers import layer_dir, layer_parts, read_layer_meta
from .storage import Storage

ARROW_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}


def embedding_schema(dim: int, dtype: str = "float16") -> pa.Schema:
    if dtype not in ARROW_DTYPES:
        raise ValueError(f"embedding dtype must be one of {sorted(ARROW_DTYPES)}, got {dtype!r}")
    return pa.schema([
        ("key", pa.string()),  # video key
        ("clip_id", pa.string()),
        ("start", pa.float64()),  # the clip's span in seconds
        ("end", pa.float64()),
        ("embedding", pa.list_(ARROW_DTYPES[dtype], dim)),  # L2-normalised (before the cast to dtype)
    ])


def embedding_table(rows: list[dict], dtype: str = "float16", dim: int | None = None) -> pa.Table:
    """One part's rows (bounded) as a table of :func:`embedding_schema`; ``dim`` from the rows."""
    vectors = np.asarray([r["embedding"] for r in rows], np.float32)
    if dim is None:
        dim = vectors.shape[1] if vectors.ndim == 2 and len(vectors) else 0
    if len(rows) and (vectors.ndim != 2 or vectors.shape[1] != dim):
        raise ValueError(f"embeddings of one layer must all have {dim} values, got shape {vectors.shape}")
    flat = pa.array(vectors.reshape(-1).astype(np.float16 if dtype == "float16" else np.float32))
    schema = embedding_schema(dim, dtype)
    return pa.table({
        "key": pa.array([r["key"] for r in rows], pa.string()),
        "clip_id": pa.array([r["clip_id"] for r in rows], pa.string()),
        "start": pa.array([r["start"] for r in rows], pa.float64()),
        "end": pa.array([r["end"] for r in rows], pa.float64()),
        "embedding": pa.FixedSizeListArray.from_arrays(flat, dim) if dim else pa.nulls(0, schema.field("embedding").type),
    }, schema=schema)


def write_embedding_part(storage: Storage, layer: str, version: str, part: str, table: pa.Table) -> str:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    path = f"{layer_dir(layer, version)}/{part}.parquet"
    storage.write_bytes(path, buf.getvalue())
    return path


def embedding_dataset(storage: Storage, layer: str, version: str) -> ds.Dataset:
    """The layer's parts as one ``pyarrow.dataset`` (local or S3 through the storage's filesystem)."""
    parts = layer_parts(storage, layer, version)
    if not parts:
        raise FileNotFoundError(f"no embedding layer {layer}/{version} in {storage.root}")
    meta = read_layer_meta(storage, layer, version)
    if meta.get("kind") != "embedding":
        raise ValueError(f"layer {layer}/{version} is not an embedding layer (its layer.json says kind "
                         f"{meta.get('kind')!r}); give the LAYER/VERSION that `annotate --kind embedding` wrote")
    from .catalog import arrow_filesystem

    filesystem, base = arrow_filesystem(storage)
    return ds.dataset([f"{base}/{p}" for p in parts], format="parquet", filesystem=filesystem)


def vectors(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """``[rows, dim]`` float32 of a batch's ``embedding`` column (one copy, no Python per row)."""
    column = batch.column("embedding")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
