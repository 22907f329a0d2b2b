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
    timeout_s: float = 30.0  # connect/read timeout of one HTTP read (a stalled server is noticed this fast)
    deadline_s: float = 600.0  # overall limit of one HTTP fetch, retries included: a trickling server cannot hold a worker forever
    retries: int = 3  # extra HTTP attempts on connection errors, 429 and 5xx
    backoff_s: float = 0.5  # first retry delay; doubles each attempt

    def __post_init__(self):
        from ..config import check_positive

        check_positive("fetch", max_bytes=self.max_bytes, timeout_s=self.timeout_s, deadline_s=self.deadline_s)


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class Fetch(Stage):
    name = "fetch"
    version = "1"
    # I/O bound: several fetches share a core. Dedup and probe declare the same, so Ray Data fuses the
    # three into one task per video (one hop and one worker, not three; see docs/stages.md)
    resources = Resources(num_cpus=0.25)

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
            raise ItemFailed(f"too_large: {_human(size)} exceeds the {_human(self.config.max_bytes)} cap (fetch.max_bytes)")

    def _fetch_local(self, path: str) -> bytes:
        if not os.path.exists(path):
            raise ItemFailed(f"not_found: {path}")
        if not os.path.isfile(path):
            raise ItemFailed(f"not_a_file: {path}")
        self._check_size(os.path.getsize(path))
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise ItemFailed(f"unreadable: {path}: {exc.strerror or exc}") from exc

    def _fetch_s3(self, url: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        from ..shards.retry import RetryError, read_s3_object, with_retries
        from ..shards.storage import s3_client, split_s3

        try:
            bucket, key = split_s3(url)
        except ValueError:
            raise ItemFailed(f"bad_uri: {url} names no bucket (write s3://BUCKET/KEY)") from None
        if not key:
            raise ItemFailed(f"bad_uri: {url} names no object key (write s3://BUCKET/KEY)")
        client = s3_client()
        try:
            head = with_retries(lambda: client.head_object(Bucket=bucket, Key=key), url)
            self._check_size(head["ContentLength"])
            return read_s3_object(bucket, key, client)
        except FileNotFoundError as exc:
            raise ItemFailed(f"not_found: {url} (no such S3 object)") from exc
        except RetryError as exc:
            raise ItemFailed(str(exc)) from exc
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise ItemFailed(f"not_found: {url} (S3 404)") from exc
            if code in ("403", "AccessDenied"):
                raise ItemFailed(f"access_denied: {url} (S3 403)") from exc
            if code == "NoSuchBucket":
                raise ItemFailed(f"not_found: no such S3 bucket {bucket}") from exc
            raise ItemFailed(f"s3_error: {code}: {exc}") from exc
        except BotoCoreError as exc:
            raise ItemFailed(f"unreachable: S3 ({type(exc).__name__}: {exc})") from exc

    def _fetch_http(self, url: str) -> bytes:
        import requests
        import urllib3.exceptions

        delay = self.config.backoff_s
        deadline = time.monotonic() + self.config.deadline_s
        last = "no attempt made"
        for attempt in range(self.config.retries + 1):
            if attempt:
                if time.monotonic() + delay > deadline:
                    break
                time.sleep(delay)
                delay *= 2
            try:
                with requests.get(url, stream=True, timeout=self.config.timeout_s) as resp:
                    if resp.status_code == 404:
                        raise ItemFailed(f"not_found: HTTP 404: {url}")
                    if resp.status_code in (429,) or resp.status_code >= 500:
                        last = f"HTTP {resp.status_code} {resp.reason}"
                        continue
                    if resp.status_code >= 400:
                        raise ItemFailed(f"http_error: HTTP {resp.status_code} {resp.reason}: {url}")
                    length = resp.headers.get("Content-Length")
                    if length is not None and length.isdigit():
                        self._check_size(int(length))
                    data = self._read_body(resp, deadline, url)
                    if length is not None and length.isdigit() and len(data) != int(length):
                        last = f"body cut short ({len(data)} of {length} bytes)"
                        continue
                    return data
            except requests.exceptions.ConnectionError as exc:
                last = f"host unreachable or connection reset ({type(exc).__name__})"
            except requests.exceptions.Timeout:
                last = f"timed out after {self.config.timeout_s:.0f} s"
            except requests.exceptions.RequestException as exc:
                last = f"HTTP error: {exc}"
            except urllib3.exceptions.ReadTimeoutError:
                last = f"timed out after {self.config.timeout_s:.0f} s"
            except urllib3.exceptions.HTTPError as exc:  # raised by read1: the body ended early, a reset
                last = f"body cut short ({type(exc).__name__})"
        raise ItemFailed(f"unreachable: {last}, after {attempt + 1} attempt(s): {url}")

    def _read_body(self, resp, deadline: float, url: str) -> bytes:
        """The body, read as it arrives (``read1``: no waiting for a full chunk), within the deadline."""
        chunks, total = [], 0
        while True:
            if time.monotonic() > deadline:
                raise ItemFailed(f"timeout: {url} took longer than fetch.deadline_s={self.config.deadline_s:g} s "
                                 f"({_human(total)} received); raise it for very large or slow sources")
            chunk = resp.raw.read1(1 << 20, decode_content=True)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            self._check_size(total)
            chunks.append(chunk)
