"""Fetch a source's bytes: local paths, ``s3://`` (boto3, standard credential chain) and http(s).

HTTP gets timeouts, retries with exponential backoff on transient errors, and a size cap;
every failure becomes an :class:`ItemFailed` whose reason says what went wrong in plain words.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..shards.schema import normalise_uri, video_id_for
from .base import ItemFailed, Resources, Stage


@dataclass
class FetchConfig:
    max_bytes: int = 2 << 30  # 2 GiB: larger sources are refused (a row's bytes travel through Ray's object store)
    timeout_s: float = 30.0  # connect/read timeout of one HTTP attempt
    retries: int = 3  # extra HTTP attempts on connection errors, 429 and 5xx
    backoff_s: float = 0.5  # first retry delay; doubles each attempt


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class Fetch(Stage):
    name = "fetch"
    version = "1"
    resources = Resources(num_cpus=0.25)  # I/O bound: several fetches share a core

    def __init__(self, config: FetchConfig | None = None):
        self.config = config or FetchConfig()

    def process(self, item: dict) -> dict:
        url = item["source"]["url"]
        data = self.fetch(url)
        if len(data) == 0:
            raise ItemFailed("empty file (0 bytes)")
        item["media"] = data
        item["sha256"] = hashlib.sha256(data).hexdigest()
        item["video_id"] = video_id_for(url)
        return item

    def fetch(self, url: str) -> bytes:
        scheme = urlsplit(url).scheme
        if scheme in ("http", "https"):
            return self._fetch_http(url)
        if scheme == "s3":
            return self._fetch_s3(url)
        if scheme in ("", "file"):
            return self._fetch_local(normalise_uri(url))
        raise ItemFailed(f"unsupported URI scheme {scheme!r} (use a local path, s3:// or http(s)://)")

    def _check_size(self, size: int) -> None:
        if size > self.config.max_bytes:
            raise ItemFailed(f"too large: {_human(size)} exceeds the {_human(self.config.max_bytes)} cap (fetch.max_bytes)")

    def _fetch_local(self, path: str) -> bytes:
        if not os.path.exists(path):
            raise ItemFailed(f"file not found: {path}")
        if not os.path.isfile(path):
            raise ItemFailed(f"not a regular file: {path}")
        self._check_size(os.path.getsize(path))
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise ItemFailed(f"cannot read file: {exc.strerror or exc}") from exc

    def _fetch_s3(self, url: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        from ..shards.storage import s3_client, split_s3

        bucket, key = split_s3(url)
        client = s3_client()
        try:
            head = client.head_object(Bucket=bucket, Key=key)
            self._check_size(head["ContentLength"])
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise ItemFailed(f"not found in S3 (404): {url}") from exc
            if code in ("403", "AccessDenied"):
                raise ItemFailed(f"access denied by S3 (403): {url}") from exc
            if code == "NoSuchBucket":
                raise ItemFailed(f"no such S3 bucket: {bucket}") from exc
            raise ItemFailed(f"S3 error {code}: {exc}") from exc
        except BotoCoreError as exc:
            raise ItemFailed(f"S3 unreachable: {exc}") from exc

    def _fetch_http(self, url: str) -> bytes:
        import requests

        delay = self.config.backoff_s
        last = "no attempt made"
        for attempt in range(self.config.retries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2
            try:
                with requests.get(url, stream=True, timeout=self.config.timeout_s) as resp:
                    if resp.status_code == 404:
                        raise ItemFailed(f"HTTP 404 not found: {url}")
                    if resp.status_code in (429,) or resp.status_code >= 500:
                        last = f"HTTP {resp.status_code} {resp.reason}"
                        continue
                    if resp.status_code >= 400:
                        raise ItemFailed(f"HTTP {resp.status_code} {resp.reason}: {url}")
                    length = resp.headers.get("Content-Length")
                    if length is not None and length.isdigit():
                        self._check_size(int(length))
                    chunks, total = [], 0
                    for chunk in resp.iter_content(1 << 20):
                        total += len(chunk)
                        self._check_size(total)
                        chunks.append(chunk)
                    return b"".join(chunks)
            except requests.exceptions.ConnectionError as exc:
                last = f"host unreachable ({type(exc).__name__})"
            except requests.exceptions.Timeout:
                last = f"timed out after {self.config.timeout_s:.0f} s"
            except requests.exceptions.RequestException as exc:
                last = f"HTTP error: {exc}"
        raise ItemFailed(f"{last}, after {self.config.retries + 1} attempts: {url}")
