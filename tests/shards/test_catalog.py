"""The catalog: shard table + compacted index. Incremental, idempotent and kill-safe compaction;
an old-layout dataset opens after ``longvid index`` with the same rows; finalize and stats counts
equal a recount over the parts; opening on (moto) S3 costs one request whatever the shard count."""

from __future__ import annotations

import io
import os
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from longvid.annotators.clips import ClipConfig
from longvid.cli import main as cli_main
from longvid.shards import CompactConfig, Storage, finalize, open_index, update_index
from longvid.shards.catalog import SHARD_TABLE, VIDEO_ORDER, CLIP_ORDER
from longvid.shards.index import CLIP_SCHEMA, VIDEO_SCHEMA, part_paths
from longvid.shards.sampling import BUCKET_LABELS
from longvid.shards.stats import dataset_stats, duration_histogram
from longvid.synthetic import write_known_cut_dataset, write_video
from longvid.synthetic_index import write_synthetic_shard

SMALL = CompactConfig(shards_per_file=4, row_group_rows=16)


def synthetic(root: str, shards: range, videos: int = 3, clips_per_video: int = 4) -> Storage:
    storage = Storage.for_uri(root)
    for number in shards:
        write_synthetic_shard(storage, number, videos + number % 3, clips_per_video)
    return storage


def recount(storage: Storage) -> tuple[pa.Table, pa.Table]:
    """Every row straight from the parts (the write path), sorted like the catalog's reads."""
    paths = storage.list("index/parts")
    read = lambda p: pq.read_table(io.BytesIO(storage.read_bytes(p))).replace_schema_metadata(None)  # noqa: E731
    videos = pa.concat_tables([read(p).cast(VIDEO_SCHEMA) for p in paths if p.endswith(".videos.parquet")])
    clips = pa.concat_tables([read(p).cast(CLIP_SCHEMA) for p in paths if p.endswith(".clips.parquet")])
    return videos.sort_by(VIDEO_ORDER), clips.sort_by(CLIP_ORDER)


def files_under(root: str) -> dict[str, bytes]:
    out = {}
    for folder in ("index/videos", "index/clips"):
        for name in sorted(os.listdir(os.path.join(root, folder))) if os.path.isdir(os.path.join(root, folder)) else []:
            with open(os.path.join(root, folder, name), "rb") as f:
                out[f"{folder}/{name}"] = f.read()
    return out


def test_compaction_is_incremental_idempotent_and_reads_what_the_parts_hold(tmp_path):
    root = str(tmp_path / "ds")
    storage = synthetic(root, range(10))
    first = update_index(storage, SMALL)
    assert first.added == 10 and len(first.compacted_files) == 4  # 2 full batches of 4; 2 shards wait as parts
    index = open_index(storage)
    files = index.shards["videos_file"].to_pylist()
    assert files[8:] == [part_paths(s)[0] for s in index.shard_names[8:]]
    assert len(set(files[:8])) == 2 and all(f.startswith("index/videos/") for f in files[:8])
    before = files_under(root)
    table_bytes = storage.read_bytes(SHARD_TABLE)

    again = update_index(storage, SMALL)
    assert again.added == 0 and again.compacted_files == [] and again.cleaned == []
    assert storage.read_bytes(SHARD_TABLE) == table_bytes and files_under(root) == before

    synthetic(root, range(10, 13))  # a run adds three shards: one more batch fills, nothing is rewritten
    third = update_index(storage, SMALL)
    assert third.added == 3 and len(third.compacted_files) == 2
    after = files_under(root)
    assert {k: after[k] for k in before} == before
    videos, clips = open_index(storage).read_all()
    want_videos, want_clips = recount(storage)
    assert videos.equals(want_videos) and clips.equals(want_clips)


def test_reads_select_shards_columns_and_rows_in_order(tmp_path):
    storage = synthetic(str(tmp_path / "ds"), range(9))
    update_index(storage, SMALL)
    index = open_index(storage)
    want = ["videos/shard-000005.tar", "videos/shard-000001.tar", "videos/shard-000008.tar"]  # 2 files + a part
    clips = index.read_clips(want, columns=["clip_id", "shard", "start"])
    assert clips.column_names == ["clip_id", "shard", "start"]
    _, every = recount(storage)
    expected = every.filter(pc.is_in(every["shard"], pa.array(want))).select(["clip_id", "shard", "start"])
    assert clips.equals(expected)
    assert sorted(set(clips["shard"].to_pylist())) == sorted(want)
    long = index.read_videos(want, columns=["key"], filter=pc.field("duration") > 3600)
    assert long.num_rows and long.num_rows < index.read_videos(want).num_rows
    assert index.read_videos(["videos/shard-999999.tar"]).num_rows == 0
    assert index.videos_dataset().count_rows() == int(pc.sum(index.shards["videos"]).as_py())


def test_a_killed_compaction_leaves_a_dataset_that_the_rerun_makes_equal(tmp_path):
    clean_root, killed_root = str(tmp_path / "clean"), str(tmp_path / "killed")
    clean, killed = synthetic(clean_root, range(9)), synthetic(killed_root, range(9))
    update_index(clean, SMALL)

    def die():
        raise KeyboardInterrupt("killed between the batch files and the shard table")

    with pytest.raises(KeyboardInterrupt):
        update_index(killed, SMALL, before_table_write=die)
    assert not killed.exists(SHARD_TABLE) and files_under(killed_root)  # batch files written, no table
    assert open_index(killed).shards.num_rows == 9  # still opens from the parts meanwhile
    rerun = update_index(killed, SMALL)
    assert rerun.added == 9
    assert files_under(killed_root) == files_under(clean_root)
    a, b = open_index(clean), open_index(killed)
    assert a.shards.equals(b.shards)
    assert a.read_all()[1].equals(b.read_all()[1])

    synthetic(killed_root, range(9, 12))
    with pytest.raises(KeyboardInterrupt):
        update_index(killed, SMALL, before_table_write=die)
    assert open_index(killed).shards.num_rows == 9  # the table a reader sees is the old, whole one
    os.makedirs(os.path.join(killed_root, "index/videos"), exist_ok=True)
    with open(os.path.join(killed_root, "index/videos/stray.parquet"), "wb") as f:
        f.write(b"half a file")  # what a killed non-atomic copy could leave
    report = update_index(killed, SMALL)
    assert "index/videos/stray.parquet" in report.cleaned and report.added == 3
    assert open_index(killed).read_all()[1].equals(recount(killed)[1])


@pytest.fixture(scope="module")
def old_layout(tmp_path_factory):
    """A dataset as the previous version left it: parts (without the shard-size metadata), the
    consolidated ``index/videos.parquet`` / ``clips.parquet``, no shard table."""
    base = tmp_path_factory.mktemp("old")
    paths = []
    for i in range(5):
        path = str(base / f"v{i}.mp4")
        write_video(path, [20 + 5 * i, 25], fps=25, width=64, height=48)
        paths.append((path, [20 + 5 * i]))
    root = str(base / "ds")
    write_known_cut_dataset(root, paths, per_shard=2, clips=ClipConfig(0.5, 1.0))
    storage = Storage.for_uri(root)
    videos, clips = recount(storage)
    for path in storage.list("index/parts"):  # old parts carry no key-value metadata
        table = pq.read_table(io.BytesIO(storage.read_bytes(path))).replace_schema_metadata(None)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        storage.write_bytes(path, buf.getvalue())
    for name, table in (("videos", videos), ("clips", clips)):
        buf = io.BytesIO()
        pq.write_table(table, buf)
        storage.write_bytes(f"index/{name}.parquet", buf.getvalue())
    shutil.rmtree(os.path.join(root, "index", "videos"), ignore_errors=True)
    shutil.rmtree(os.path.join(root, "index", "clips"), ignore_errors=True)
    storage.delete(SHARD_TABLE)
    return {"root": root, "videos": videos, "clips": clips}


def test_old_layout_opens_after_longvid_index_with_the_same_rows(old_layout, tmp_path, capsys, caplog):
    root = str(tmp_path / "ds")
    shutil.copytree(old_layout["root"], root)
    storage = Storage.for_uri(root)
    with caplog.at_level("WARNING"):
        before = open_index(storage)
    assert "longvid index" in caplog.text and before.shards.num_rows == 3
    second = [p for p in storage.list("videos") if p.endswith(".tar")][1]  # shard names follow manifest rows
    os.remove(os.path.join(root, part_paths(second)[0]))  # a killed writer's missing part
    assert cli_main(["index", root, "--shards-per-file", "2"]) == 0
    assert "3 shards" in capsys.readouterr().out
    assert storage.exists(SHARD_TABLE) and not storage.exists("index/videos.parquet")
    assert not storage.exists("index/clips.parquet")
    index = open_index(storage)
    videos, clips = index.read_all()
    assert videos.equals(old_layout["videos"]) and clips.equals(old_layout["clips"])
    sizes = [os.path.getsize(os.path.join(root, s)) for s in index.shard_names]
    assert index.shards["bytes"].to_pylist() == sizes
    assert cli_main(["index", root, "--shards-per-file", "2"]) == 0  # idempotent
    assert open_index(storage).shards.equals(index.shards)


def test_longvid_index_refuses_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    assert cli_main(["index", str(tmp_path)]) == 2
    assert "not a LongVid dataset" in capsys.readouterr().err


def test_finalize_and_stats_equal_a_full_recount(tmp_path):
    root = str(tmp_path / "ds")
    storage = synthetic(root, range(7))
    meta = finalize(storage, SMALL)
    synthetic(root, range(7, 9))
    meta = finalize(storage, SMALL)
    videos, clips = recount(storage)
    assert meta["counts"]["videos"] == videos.num_rows and meta["counts"]["clips"] == clips.num_rows
    assert meta["counts"]["shards"] == len(pc.unique(videos["shard"]))
    assert meta["hours"] == pytest.approx(pc.sum(videos["duration"]).as_py() / 3600)
    assert meta["visual_tokens_stage3"] == pc.sum(videos["visual_tokens"]).as_py()
    for unit, table in (("video_buckets", videos), ("clip_buckets", clips)):
        counted = {row["values"]: row["counts"] for row in pc.value_counts(table["bucket"]).to_pylist()}
        assert meta["counts"][unit] == {label: counted.get(label, 0) for label in BUCKET_LABELS}
    stats = dataset_stats(storage)
    assert stats["counts"] == {k: meta["counts"][k] for k in ("videos", "clips", "shards")}
    assert stats["clip_hours"] == pytest.approx(pc.sum(clips["duration"]).as_py() / 3600)
    by_bucket = videos.group_by("bucket").aggregate([("duration", "sum")]).to_pylist()
    hours = {row["bucket"]: row["duration_sum"] / 3600 for row in by_bucket}
    for row in stats["buckets"]:
        assert row["video_hours"] == pytest.approx(hours.get(row["bucket"], 0.0))
    counts, _ = duration_histogram(open_index(storage), "videos", bins=8)
    assert counts.sum() == videos.num_rows


def test_opening_on_s3_reads_the_shard_table_in_one_request(s3_bucket):
    storage = Storage.for_uri(f"s3://{s3_bucket}/corpus")
    requests = []
    storage.client.meta.events.register("before-send.s3", lambda request, **_: requests.append(request.url))
    for shards in (range(3), range(3, 12)):
        for number in shards:
            write_synthetic_shard(storage, number, 2, 3)
        finalize(storage, SMALL)
        requests.clear()
        index = open_index(storage)
        assert len(requests) == 1 and requests[0].endswith("index/shards.parquet")
    assert index.shards.num_rows == 12
    clips = index.read_clips(["videos/shard-000004.tar", "videos/shard-000010.tar"], columns=["key", "start"])
    assert clips.num_rows == 2 * 2 * 3 and len(requests) == 1  # rows come through pyarrow's own S3 client
    assert index.clips_dataset().count_rows() == 12 * 2 * 3


def test_repair_drops_a_vanished_shard_and_rewrites_only_its_batch(tmp_path):
    root = str(tmp_path / "ds")
    storage = synthetic(root, range(9))
    update_index(storage, SMALL)
    before = files_under(root)
    os.remove(os.path.join(root, "videos/shard-000005.tar"))
    report = update_index(storage, SMALL, repair=True)
    assert report.dropped == ["videos/shard-000005.tar"] and report.repaired == []
    index = open_index(storage)
    assert "videos/shard-000005.tar" not in index.shard_names and index.shards.num_rows == 8
    after = files_under(root)
    kept = [name for name in before if name in after]
    assert len(kept) == 2 and all(after[name] == before[name] for name in kept)  # the other batch untouched
    videos, clips = index.read_all()
    want_videos, want_clips = recount(storage)  # the dropped shard's parts are gone too
    assert videos.equals(want_videos) and clips.equals(want_clips)
    assert index.videos_dataset().count_rows() == videos.num_rows  # no stale rows left in any file


def test_sample_counts_per_shard_equal_the_rows_a_stream_would_deliver(tmp_path):
    storage = synthetic(str(tmp_path / "ds"), range(5))
    vpath = part_paths("videos/shard-000002.tar")[0]
    part = pq.read_table(io.BytesIO(storage.read_bytes(vpath)))
    status = pa.array(["failed"] + ["ok"] * (part.num_rows - 1))  # a video the index holds but no stream serves
    buf = io.BytesIO()
    pq.write_table(part.set_column(part.schema.get_field_index("status"), "status", status), buf)
    storage.write_bytes(vpath, buf.getvalue())
    update_index(storage, SMALL)
    index = open_index(storage)
    videos, clips = recount(storage)
    ok = videos.filter(pc.equal(videos["status"], "ok"))
    ok_clips = clips.filter(pc.is_in(clips["key"], value_set=ok["key"]))
    assert pc.sum(index.shards["ok_clips"]).as_py() == ok_clips.num_rows < clips.num_rows
    for unit, rows in (("video", ok), ("clip", ok_clips)):
        for buckets in ([], ["10-30min", "30-60min"], ["0-30s"]):
            kept = rows.filter(pc.is_in(rows["bucket"], pa.array(buckets or list(BUCKET_LABELS))))
            per_shard = [kept.filter(pc.equal(kept["shard"], s)).num_rows for s in index.shard_names]
            assert index.sample_counts(unit, buckets).tolist() == per_shard
    with pytest.raises(ValueError, match="unknown duration bucket"):
        index.sample_counts("clip", ["forever"])
