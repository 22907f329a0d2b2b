"""The ledger: one row per source per run saying what happened to it and why.

Rows are kept in memory by the driver and flushed atomically to ``ledger/<run_id>.parquet``
(rewritten whole at each flush), so a killed run leaves the rows up to its last flush.
"""

from __future__ import annotations

import io
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from .storage import Storage

LEDGER_DIR = "ledger"

LEDGER_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("source_index", pa.int64()),
        ("url", pa.string()),
        ("video_id", pa.string()),
        ("status", pa.string()),  # ok | failed
        ("action", pa.string()),  # written | skipped (already committed) | duplicate | failed
        ("stage", pa.string()),  # the stage that decided the outcome
        ("reason", pa.string()),  # for people: why it failed / was skipped
        ("duplicate_of", pa.string()),  # video id of the first copy of the same content
        ("sha256", pa.string()),
        ("shard", pa.string()),
        ("duration", pa.float64()),
        ("time", pa.float64()),
    ]
)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class Ledger:
    def __init__(self, storage: Storage, run_id: str, directory: str = LEDGER_DIR):
        self.storage = storage
        self.run_id = run_id
        self.path = f"{directory}/{run_id}.parquet"
        self.rows: list[dict] = []

    def add(self, **row) -> None:
        unknown = set(row) - set(LEDGER_SCHEMA.names)
        if unknown:
            raise ValueError(f"unknown ledger columns: {sorted(unknown)}")
        row.setdefault("time", time.time())
        row["run_id"] = self.run_id
        self.rows.append({name: row.get(name) for name in LEDGER_SCHEMA.names})

    def flush(self) -> None:
        table = pa.Table.from_pylist(self.rows, schema=LEDGER_SCHEMA)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.storage.write_bytes(self.path, buf.getvalue())


def read_ledger(storage: Storage, directory: str = LEDGER_DIR) -> pa.Table:
    """All runs' rows, oldest run first."""
    tables = [pq.read_table(io.BytesIO(storage.read_bytes(p))) for p in storage.list(directory) if p.endswith(".parquet")]
    if not tables:
        return LEDGER_SCHEMA.empty_table()
    return pa.concat_tables(tables).sort_by([("time", "ascending")])
