"""Reading an ingestion manifest: CSV, TSV, JSONL or Parquet with a ``url`` column.

Other columns are kept as per-source metadata. The manifest may be local or on S3. Nothing in it
is executed or unpickled: only tabular text and Parquet are accepted.
"""

from __future__ import annotations

import io
import json
import math
import os

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


class ManifestError(ValueError):
    pass


def _read_bytes(uri: str) -> bytes:
    if uri.startswith("s3://"):
        from ..shards.storage import s3_client, split_s3

        bucket, key = split_s3(uri)
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    if not os.path.exists(uri):
        raise ManifestError(f"manifest not found: {uri}")
    with open(uri, "rb") as f:
        return f.read()


def _jsonable(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def read_manifest(uri: str) -> list[dict]:
    """Rows ``{"source_index", "url", "metadata"}`` in manifest order."""
    ext = os.path.splitext(uri.split("?")[0])[1].lower()
    fmt = FORMATS.get(ext)
    if fmt is None:
        raise ManifestError(f"unknown manifest format {ext!r}: use one of {sorted(FORMATS)}")
    data = _read_bytes(uri)
    try:
        if fmt in ("csv", "tsv"):
            table = pacsv.read_csv(
                io.BytesIO(data),
                parse_options=pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ","),
                convert_options=pacsv.ConvertOptions(column_types={"url": pa.string()}, strings_can_be_null=False),
            )
        elif fmt == "jsonl":
            table = pajson.read_json(io.BytesIO(data))
        else:
            table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"cannot parse manifest {uri} as {fmt}: {exc}") from exc
    if "url" not in table.column_names:
        raise ManifestError(f"manifest {uri} has no 'url' column (columns: {table.column_names})")
    rows = []
    for i, record in enumerate(table.to_pylist()):
        url = record.pop("url")
        rows.append({
            "source_index": i,
            "url": "" if url is None else str(url).strip(),
            "metadata": {k: _jsonable(v) for k, v in record.items()},
        })
    return rows


def write_manifest(path: str, urls: list[str], extra: dict[str, list] | None = None) -> str:
    """Write a JSONL manifest (used by the demo and tests)."""
    with open(path, "w", encoding="utf-8") as f:
        for i, url in enumerate(urls):
            row = {"url": url}
            for k, values in (extra or {}).items():
                row[k] = values[i]
            f.write(json.dumps(row) + "\n")
    return path
