"""Reading an ingestion manifest row by row: CSV, TSV, JSONL or Parquet with a ``url`` column.

A bad row (wrong number of fields, an unclosed quote, bytes that are not UTF-8, a JSON line that
is not an object, a ``url`` that is not a string) becomes a :class:`BadRow` with its line number
and why; every good row goes on. Other columns are kept as per-source metadata (a JSON object
per row, so a column whose type drifts between rows is no error). Rows are kept in Arrow
record batches built in chunks, never a list of dicts of the whole manifest. Nothing in a
manifest is executed or unpickled.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
ROW_SCHEMA = pa.schema([("source_index", pa.int64()), ("url", pa.string()), ("metadata", pa.string())])
CHUNK_ROWS = 65536  # rows per Arrow record batch: bounded Python lists while parsing
MAX_RECORD_LINES = 64  # a quoted CSV field may span lines; past this an open quote is a bad row


class ManifestError(ValueError):
    """The manifest as a whole cannot be read (missing, a directory, unknown format)."""


@dataclass
class BadRow:
    source_index: int  # the row's place among data rows (as good rows are numbered)
    line: int  # 1-based line in the file where the row starts
    reason: str  # "bad_row: ..." or "encoding: ..."
    url: str | None = None  # when the row got as far as having one


@dataclass
class Manifest:
    """Good rows as Arrow batches (``source_index``, ``url``, ``metadata`` JSON) and bad rows."""

    uri: str
    batches: list[pa.RecordBatch] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return sum(b.num_rows for b in self.batches) + len(self.bad_rows)

    def table(self) -> pa.Table:
        return pa.Table.from_batches(self.batches, schema=ROW_SCHEMA)

    def iter_rows(self) -> Iterator[dict]:
        """Good rows ``{"source_index", "url", "metadata"}``, one batch of Python dicts at a time."""
        for batch in self.batches:
            for row in batch.to_pylist():
                yield {"source_index": row["source_index"], "url": row["url"], "metadata": json.loads(row["metadata"])}


class _Builder:
    """Appends rows and bad rows, flushing good rows into Arrow batches every CHUNK_ROWS."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.columns: tuple[list, list, list] = ([], [], [])
        self.next_index = 0

    def good(self, url, metadata: dict) -> None:
        if not isinstance(url, str):
            kind = "missing" if url is None else type(url).__name__
            return self.bad(self._line, f"bad_row: 'url' is {kind}, not a string", None)
        if not url.strip():
            return self.bad(self._line, "bad_row: empty url", url)
        for column, value in zip(self.columns, (self.next_index, url, json.dumps(_jsonable(metadata)))):
            column.append(value)
        self.next_index += 1
        if len(self.columns[0]) >= CHUNK_ROWS:
            self.flush()

    def bad(self, line: int, reason: str, url: str | None = None) -> None:
        self.manifest.bad_rows.append(BadRow(self.next_index, line, reason, url))
        self.next_index += 1

    def at(self, line: int) -> "_Builder":
        self._line = line
        return self

    def flush(self) -> None:
        if self.columns[0]:
            arrays = [pa.array(c, t.type) for c, t in zip(self.columns, ROW_SCHEMA)]
            self.manifest.batches.append(pa.RecordBatch.from_arrays(arrays, schema=ROW_SCHEMA))
            self.columns = ([], [], [])


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


def _decode(raw: bytes, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _RowError(f"encoding: line {line} is not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                        "re-save the manifest as UTF-8") from None


class _RowError(ValueError):
    pass


def _record_end(lines: list[bytes], i: int) -> int | None:
    """End (exclusive) of the CSV record starting at line ``i``: it spans lines only while a quote
    is open, and at most MAX_RECORD_LINES; None when the quote never closes."""
    quotes = 0
    for j in range(i, min(len(lines), i + MAX_RECORD_LINES)):
        quotes += lines[j].count(b'"')
        if quotes % 2 == 0:
            return j + 1
    return None


def _parse_record(raw: bytes, line: int, delimiter: str, width: int) -> list[str]:
    try:
        fields = next(csv.reader(io.StringIO(_decode(raw, line), newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        raise _RowError(f"bad_row: line {line}: {exc}") from None
    if len(fields) != width:
        raise _RowError(f"bad_row: line {line} has {len(fields)} fields, the header has {width}")
    return fields


def _parse_csv(data: bytes, delimiter: str, out: _Builder) -> None:
    lines = data.splitlines(keepends=True)
    header_line = next((n for n, raw in enumerate(lines) if raw.strip()), None)
    if header_line is None:
        raise ManifestError(f"manifest {out.manifest.uri} is empty")
    try:
        header = next(csv.reader([_decode(lines[header_line], header_line + 1)], delimiter=delimiter))
    except (_RowError, csv.Error) as exc:
        raise ManifestError(f"manifest {out.manifest.uri}: cannot read its header line: {exc}") from None
    header = [h.strip() for h in header]
    if "url" not in header:
        raise ManifestError(f"manifest {out.manifest.uri} has no 'url' column (columns: {header})")
    url_at = header.index("url")
    i = header_line + 1
    while i < len(lines):
        line, end = i + 1, _record_end(lines, i)
        if not lines[i].strip():
            i += 1
            continue
        try:
            if end is None:
                raise _RowError(f"bad_row: line {line} has an unclosed quote")
            fields = _parse_record(b"".join(lines[i:end]), line, delimiter, len(header))
        except _RowError as exc:
            if end is not None and end - i > 1:  # a quote that seemed to span lines: blame this line only
                exc = _RowError(f"bad_row: line {line} has an unclosed quote")
                end = i + 1
            out.bad(line, str(exc))
            i = end if end is not None else i + 1
            continue
        out.at(line).good(fields[url_at], {k: v for k, v in zip(header, fields) if k != "url"})
        i = end


def _parse_jsonl(data: bytes, out: _Builder) -> None:
    for n, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(_decode(raw, n))
        except _RowError as exc:
            out.bad(n, str(exc))
            continue
        except json.JSONDecodeError as exc:
            out.bad(n, f"bad_row: line {n} is not valid JSON ({exc.msg} at column {exc.colno}; truncated?)")
            continue
        if not isinstance(value, dict):
            out.bad(n, f"bad_row: line {n} is a JSON {type(value).__name__}, not an object with a 'url'")
            continue
        url = value.pop("url", None)
        out.at(n).good(url, value)


def _parse_parquet(data: bytes, out: _Builder) -> None:
    try:
        file = pq.ParquetFile(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"cannot parse manifest {out.manifest.uri} as parquet: {exc}") from None
    if "url" not in file.schema_arrow.names:
        raise ManifestError(f"manifest {out.manifest.uri} has no 'url' column (columns: {file.schema_arrow.names})")
    n = 0
    for batch in file.iter_batches(batch_size=CHUNK_ROWS):
        for record in batch.to_pylist():  # one bounded batch at a time
            n += 1
            out.at(n).good(record.pop("url"), record)


def _read_bytes(uri: str) -> bytes:
    if uri.startswith("s3://"):
        from ..shards.retry import RetryError, read_s3_object
        from ..shards.storage import split_s3

        try:
            bucket, key = split_s3(uri)
        except ValueError as exc:
            raise ManifestError(f"{exc}: write s3://BUCKET/KEY") from None
        try:
            return read_s3_object(bucket, key)
        except FileNotFoundError:
            raise ManifestError(f"manifest not found: {uri} (no such S3 object or bucket)") from None
        except RetryError as exc:
            raise ManifestError(f"cannot read manifest {uri}: {exc}") from None
        except Exception as exc:  # botocore: credentials, access denied, bad endpoint
            detail = " ".join(str(exc).split())
            raise ManifestError(f"cannot read manifest {uri}: {type(exc).__name__}: {detail}") from None
    if os.path.isdir(uri):
        raise ManifestError(f"manifest {uri} is a directory: name a CSV/TSV/JSONL/Parquet file")
    if not os.path.exists(uri):
        raise ManifestError(f"manifest not found: {uri}")
    try:
        with open(uri, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {uri}: {exc.strerror or exc}") from None


def load_manifest(uri: str) -> Manifest:
    """Parse the whole manifest; raises ManifestError only when no row can be read at all."""
    if not uri.startswith("s3://") and os.path.isdir(uri):
        raise ManifestError(f"manifest {uri} is a directory: name a CSV/TSV/JSONL/Parquet file")
    ext = os.path.splitext(uri.split("?")[0])[1].lower()
    fmt = FORMATS.get(ext)
    if fmt is None:
        raise ManifestError(f"unknown manifest format {ext!r} of {uri}: use one of {sorted(FORMATS)}")
    data = _read_bytes(uri)
    manifest = Manifest(uri)
    builder = _Builder(manifest)
    if fmt in ("csv", "tsv"):
        _parse_csv(data, "\t" if fmt == "tsv" else ",", builder)
    elif fmt == "jsonl":
        _parse_jsonl(data, builder)
    else:
        _parse_parquet(data, builder)
    builder.flush()
    return manifest


def read_manifest(uri: str) -> list[dict]:
    """Good rows ``{"source_index", "url", "metadata"}`` in manifest order (small manifests, tests)."""
    return list(load_manifest(uri).iter_rows())


def write_manifest(path: str, urls: list[str], extra: dict[str, list] | None = None) -> str:
    """Write a JSONL manifest (used by the demo and tests)."""
    with open(path, "w", encoding="utf-8") as f:
        for i, url in enumerate(urls):
            row = {"url": url}
            for k, values in (extra or {}).items():
                row[k] = values[i]
            f.write(json.dumps(row) + "\n")
    return path
