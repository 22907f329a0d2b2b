"""Edit one row of a real dataset's index (or a layer part) in place, as a hostile user or a
schema drift would: the file the shard table names for that shard is rewritten with the change."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from longvid.shards.catalog import open_index
from longvid.shards.storage import LocalStorage


def index_file(root: str, shard: str, kind: str) -> str:
    table = open_index(LocalStorage(root)).shards
    row = table.filter(pc.equal(table["shard"], shard)).to_pylist()[0]
    return os.path.join(root, row[f"{kind}_file"])


def set_value(root: str, shard: str, kind: str, id_column: str, row_id: str, column: str, value,
              type_: pa.DataType | None = None) -> None:
    """Set ``column`` of the row whose ``id_column`` is ``row_id``; with ``type_`` the whole column
    is stored as that type (a drifted part: every other row keeps its value, as text)."""
    path = index_file(root, shard, kind)
    table = pq.read_table(path)
    hit = pc.equal(table[id_column], row_id).to_numpy(zero_copy_only=False)
    assert hit.sum() == 1, f"{row_id} not found once in {path}"
    values = table[column].to_pylist()
    values[int(hit.argmax())] = value
    if type_ is not None:
        values = [v if i == int(hit.argmax()) else str(v) for i, v in enumerate(values)]
    new = pa.array(values, type_ or table.schema.field(column).type)
    table = table.set_column(table.schema.get_field_index(column), pa.field(column, new.type), new)
    pq.write_table(table, path)  # schema metadata (the shard's size) kept with the table
