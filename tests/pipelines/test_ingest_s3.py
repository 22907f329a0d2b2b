"""Ingestion with the manifest, the sources and the dataset all on S3 (a real moto server)."""

import hashlib
import json

import boto3

from longvid.pipelines.ingest import run_ingest
from longvid.shards import read_ledger, read_videos_index
from longvid.shards.storage import Storage
from tests.pipelines.test_ingest import small_config


def test_s3_to_s3(ray_session, s3_bucket, sample_videos):
    s3 = boto3.client("s3")
    urls = []
    for name in ("a_h264", "b_vp9"):
        key = f"raw/{name}.bin"
        s3.upload_file(sample_videos[name].path, s3_bucket, key)
        urls.append(f"s3://{s3_bucket}/{key}")
    urls.append(f"s3://{s3_bucket}/raw/missing.mp4")
    body = "".join(json.dumps({"url": u}) + "\n" for u in urls)
    s3.put_object(Bucket=s3_bucket, Key="manifest.jsonl", Body=body.encode())
    out = f"s3://{s3_bucket}/datasets/one"
    summary = run_ingest(f"s3://{s3_bucket}/manifest.jsonl", out, small_config())
    assert (summary.written, summary.failed) == (2, 1)
    storage = Storage.for_uri(out)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="datasets/one/")["Contents"]}
    assert "datasets/one/dataset.json" in keys and "datasets/one/index/shards.parquet" in keys
    assert any(k.startswith("datasets/one/videos/shard-") and k.endswith(".tar") for k in keys)
    videos = read_videos_index(storage).to_pylist()
    for v in videos:
        media = storage.read_range(v["shard"], v["media_offset"], v["media_size"])
        record = json.loads(storage.read_range(v["shard"], v["json_offset"], v["json_size"]))
        src = next(p for n, p in ((n, sample_videos[n].path) for n in ("a_h264", "b_vp9")) if v["url"].endswith(f"{n}.bin"))
        # the member is the source remuxed into MP4; the content hash stays the source bytes'
        assert hashlib.sha256(media).hexdigest() == record["video"]["media_sha256"] and v["media_member"].endswith(".mp4")
        assert v["sha256"] == hashlib.sha256(open(src, "rb").read()).hexdigest()
    ledger = read_ledger(storage).to_pylist()
    missing = next(r for r in ledger if r["url"].endswith("missing.mp4"))
    assert missing["stage"] == "fetch" and "404" in missing["reason"]
    # rerun on S3 skips what is committed
    again = run_ingest(f"s3://{s3_bucket}/manifest.jsonl", out, small_config())
    assert (again.written, again.skipped) == (0, 2)
