"""annotate's planning from the shard table: the same part names (and rows) as planning over every
video row, so a resumed run matches; rows are read only for shards with a part still to do."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from longvid.pipelines.annotate import part_names, plan_parts, plan_todo
from longvid.shards import CompactConfig, Storage, open_index, update_index
from longvid.synthetic_index import write_synthetic_shard


@pytest.fixture
def index(tmp_path):
    storage = Storage.for_uri(str(tmp_path / "ds"))
    for number in range(7):
        write_synthetic_shard(storage, number, 1 + (number * 5) % 9, 2)
    update_index(storage, CompactConfig(shards_per_file=3))  # two compacted files + a part
    return open_index(storage)


def every_ok_video(index) -> list[dict]:
    rows = index.read_videos(index.shard_names, filter=pc.field("status") == "ok")
    return rows.sort_by([("shard", "ascending"), ("media_offset", "ascending")]).to_pylist()


@pytest.mark.parametrize("videos_per_part,limit", [(2, 0), (3, 0), (4, 11), (1, 5)])
def test_part_names_from_the_shard_table_equal_planning_over_every_row(index, videos_per_part, limit):
    rows = every_ok_video(index)
    want = plan_parts(rows[:limit] if limit else rows, videos_per_part)
    names, planned = part_names(index.shards, videos_per_part, limit)
    assert list(names) == list(want)
    assert sum(planned.values()) == (limit or len(rows))
    done = set(list(want)[::2])  # a resumed run: every other part committed
    todo = plan_todo(index, names, planned, done, videos_per_part)
    assert sorted(todo) == sorted(set(want) - done)
    # planned rows carry validate.py's bad_row reason (None: a good row) for the stages to fail on
    assert all(r.pop("bad_row", "missing") is None for name in todo for r in todo[name])
    assert all(todo[name] == want[name] for name in todo)
