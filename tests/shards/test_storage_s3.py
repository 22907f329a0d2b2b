"""Storage and shard writing against a real S3 HTTP server (moto) on 127.0.0.1."""

import webdataset as wds

from longvid.shards.storage import Storage
from longvid.shards.writer import ShardWriter


def test_s3_roundtrip_atomic_put_list_range(s3_bucket, tmp_path):
    storage = Storage.for_uri(f"s3://{s3_bucket}/data/set")
    storage.write_bytes("a/b.json", b'{"x": 1}')
    assert storage.exists("a/b.json") and not storage.exists("a/c.json")
    assert storage.read_bytes("a/b.json") == b'{"x": 1}'
    assert storage.read_range("a/b.json", 2, 3) == b'x":'
    local = tmp_path / "f.bin"
    local.write_bytes(b"0123456789")
    storage.put_file(str(local), "a/c.bin")
    assert not local.exists()
    assert storage.list("a") == ["a/b.json", "a/c.bin"]
    assert storage.size("a/c.bin") == 10


def test_shards_on_s3_read_back_with_webdataset(s3_bucket, tmp_path):
    import boto3

    storage = Storage.for_uri(f"s3://{s3_bucket}/ds")
    n = iter(range(100))
    with ShardWriter(storage, lambda: next(n), max_samples=2) as writer:
        for i in range(3):
            writer.write(f"{i + 1:016x}", {"json": b"{}", "mp4": bytes([i]) * 100})
    assert storage.list("videos") == ["videos/shard-000000.tar", "videos/shard-000001.tar"]
    body = boto3.client("s3").get_object(Bucket=s3_bucket, Key="ds/videos/shard-000000.tar")["Body"].read()
    local = tmp_path / "shard.tar"
    local.write_bytes(body)
    samples = list(wds.WebDataset(str(local), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"{1:016x}", f"{2:016x}"]
