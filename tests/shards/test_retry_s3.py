"""Every S3 read path survives bodies cut short after the headers (a proxy in front of moto cuts
them for a bounded number of requests), and gives up with a clear reason when they never stop."""

import io

import boto3
import pytest

from longvid.annotators.base import ItemFailed
from longvid.annotators.fetch import Fetch
from longvid.pipelines.manifest import ManifestError, load_manifest
from longvid.shards.retry import RetryError
from longvid.shards.storage import S3Storage
from tests.faultproxy import FaultProxy

DATA = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def proxied(s3_bucket, s3_server, monkeypatch):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="ds/blob.bin", Body=DATA)
    s3.put_object(Bucket=s3_bucket, Key="m.jsonl", Body=b'{"url": "/v/a.mp4"}\n' * 1000)
    proxy = FaultProxy(s3_server["AWS_ENDPOINT_URL"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setattr("longvid.shards.retry.DEFAULT_POLICY.backoff_s", 0.01)
    yield proxy, s3_bucket
    proxy.close()


def test_whole_and_ranged_reads_retry_cut_bodies(proxied):
    proxy, bucket = proxied
    storage = S3Storage(f"s3://{bucket}/ds")
    proxy.cut_next(2)
    assert storage.read_bytes("blob.bin") == DATA
    assert proxy.cut == 2
    proxy.cut_next(2)
    assert storage.read_range("blob.bin", 1000, 5000) == DATA[1000:6000]
    assert proxy.cut == 2


def test_streamed_read_resumes_where_the_body_stopped(proxied):
    proxy, bucket = proxied
    proxy.cut_next(3)
    with S3Storage(f"s3://{bucket}/ds").open_read("blob.bin") as stream:
        got = io.BufferedReader(stream).read()
    assert got == DATA and proxy.cut == 3


def test_fetch_and_manifest_retry_cut_bodies(proxied):
    proxy, bucket = proxied
    proxy.cut_next(2)
    assert Fetch().fetch(f"s3://{bucket}/ds/blob.bin") == DATA
    proxy.cut_next(2)
    assert load_manifest(f"s3://{bucket}/m.jsonl").num_rows == 1000


def test_gives_up_with_a_reason_when_every_body_is_cut(proxied):
    proxy, bucket = proxied
    proxy.cut_next(1000)
    with pytest.raises(RetryError, match=r"^read_failed: s3://.*gave up after 5 attempts"):
        S3Storage(f"s3://{bucket}/ds").read_bytes("blob.bin")
    with pytest.raises(ItemFailed, match=r"^read_failed: "):
        Fetch().fetch(f"s3://{bucket}/ds/blob.bin")
    with pytest.raises(ManifestError, match="gave up"):
        load_manifest(f"s3://{bucket}/m.jsonl")
