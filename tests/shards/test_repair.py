"""End-of-run repair: a key found in two shards stays only in the lowest one; two keys with the same
content keep only the earliest."""

import os

import webdataset as wds

from longvid.shards.index import read_index_parts, write_index_part
from longvid.shards.repair import QUARANTINE_DIR, content_duplicates, drop_content_duplicates, drop_duplicate_keys
from longvid.shards.storage import LocalStorage
from longvid.shards.writer import ShardWriter, encode_json


A, B, C = "a" * 16, "b" * 16, "c" * 16


def _record(key, sha256=None):
    video = {"source_uri": f"/src/{key}.mp4", "sha256": sha256 or key * 4, "duration": 1.0, "fps": 25.0, "num_frames": 25,
             "width": 64, "height": 48, "codec": "h264", "container": "mp4", "has_audio": False}
    return {"video": video, "plan": {"bucket": "0-30 s", "stages": {}}, "clips": []}


def _shard(storage, number, keys, sha256=None):
    records = {k: _record(k, (sha256 or {}).get(k)) for k in keys}
    with ShardWriter(storage, lambda: number, max_samples=100,
                     on_commit=lambda shard: write_index_part(storage, shard, records)) as writer:
        for k in keys:
            writer.write(k, {"json": encode_json(records[k]), "mp4": f"media of {k}".encode()})


def test_duplicates_kept_once_in_lowest_shard(tmp_path):
    storage = LocalStorage(str(tmp_path))
    _shard(storage, 0, [A, B])
    _shard(storage, 3, [B, C])  # B again: rewritten without it
    _shard(storage, 5, [A])  # nothing else: set aside
    notes = drop_duplicate_keys(storage, read_index_parts(storage)[0])
    assert {n["shard"] for n in notes} == {"videos/shard-000003.tar", "videos/shard-000005.tar"}
    assert all(n["reason"].startswith("duplicate_keys: ") for n in notes)
    shards = sorted(str(p) for p in (tmp_path / "videos").iterdir())
    keys = [s["__key__"] for s in wds.WebDataset(shards, shardshuffle=False)]
    assert sorted(keys) == [A, B, C]
    videos, _ = read_index_parts(storage)
    assert sorted(videos["key"].to_pylist()) == [A, B, C]
    assert dict(zip(videos["key"].to_pylist(), videos["shard"].to_pylist()))[B] == "videos/shard-000000.tar"
    assert os.path.exists(tmp_path / QUARANTINE_DIR / "videos" / "shard-000005.tar")
    assert drop_duplicate_keys(storage, videos) == []  # idempotent


def test_content_duplicates_keep_the_earliest(tmp_path):
    storage = LocalStorage(str(tmp_path))
    D, E = "d" * 16, "e" * 16
    same = "5" * 64
    _shard(storage, 0, [C, A], sha256={C: same})
    _shard(storage, 2, [B, D], sha256={D: same})  # D holds C's bytes under another key
    _shard(storage, 4, [E], sha256={E: same})  # only a copy: set aside
    videos, _ = read_index_parts(storage)
    assert content_duplicates(videos) == {D: C, E: C}
    notes, duplicate_of = drop_content_duplicates(storage, videos)
    assert duplicate_of == {D: C, E: C}
    assert {n["shard"] for n in notes} == {"videos/shard-000002.tar", "videos/shard-000004.tar"}
    assert all(n["reason"].startswith("duplicate_content: ") for n in notes)
    videos, _ = read_index_parts(storage)
    assert sorted(videos["key"].to_pylist()) == sorted([A, B, C])
    shards = sorted(str(p) for p in (tmp_path / "videos").iterdir())
    assert sorted(s["__key__"] for s in wds.WebDataset(shards, shardshuffle=False)) == sorted([A, B, C])
    assert os.path.exists(tmp_path / QUARANTINE_DIR / "videos" / "shard-000004.tar")
    assert drop_content_duplicates(storage, videos) == ([], {})  # idempotent


def test_a_shard_rewritten_after_it_was_indexed_is_counted_again(tmp_path):
    """The end-of-run repair rewrites a shard that the shard table already summarised (compacted or
    pending): ``update_index(changed=...)`` re-reads its rebuilt part, so ``dataset.json``'s counts
    follow the shards. Without it the table kept the old count (found by a kill test: 7 videos
    counted, 6 in the shards)."""
    import json

    from longvid.shards.compact import CompactConfig, update_index
    from longvid.shards.dataset import finalize

    storage = LocalStorage(str(tmp_path))
    same = "f" * 64
    _shard(storage, 0, [A, B], sha256={A: same})
    _shard(storage, 1, [C, "d" * 16], sha256={C: same})
    config = CompactConfig(shards_per_file=1)  # both shards summarised in compacted files
    update_index(storage, config)
    videos, _ = read_index_parts(storage)
    notes, _ = drop_content_duplicates(storage, videos)
    assert [n["shard"] for n in notes] == ["videos/shard-000001.tar"]  # rewritten without C, in place
    update_index(storage, config, repair=True, changed=[n["shard"] for n in notes])
    finalize(storage)
    meta = json.load(open(tmp_path / "dataset.json"))
    assert meta["counts"]["videos"] == 3 == len(read_index_parts(storage)[0])  # A, B and d
