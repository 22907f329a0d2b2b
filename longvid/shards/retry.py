"""Bounded retries with backoff for reads whose body can be cut short after the headers.

botocore retries 503s, throttling and connection resets on the request, but not a response body
that ends early (``ResponseStreamingError``, ``IncompleteReadError``): every S3 read here goes
through :func:`read_s3_object`, which re-issues the whole GET (or ranged GET) a bounded number of
times and then raises :class:`RetryError` with the last reason. A missing object is not
transient: it raises ``FileNotFoundError`` at once.
"""

from __future__ import annotations

import http.client
import logging
import random
import time
from dataclasses import dataclass
import io
from typing import Callable, TypeVar

log = logging.getLogger("longvid")
T = TypeVar("T")


@dataclass
class RetryPolicy:
    attempts: int = 5  # tries in all; a body cut short five times running is an outage, not bad luck
    backoff_s: float = 0.2  # first delay; doubles each try (with jitter) so a throttled store recovers
    max_backoff_s: float = 5.0  # cap on one delay: the whole budget stays under ~10 s


DEFAULT_POLICY = RetryPolicy()


class RetryError(IOError):
    """A read that kept failing: ``str()`` says what was read, how often and the last reason."""


_NOT_FOUND = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")
_TRANSIENT_CODES = ("500", "502", "503", "504", "SlowDown", "InternalError", "RequestTimeout", "ServiceUnavailable",
                    "Throttling", "ThrottlingException", "RequestTimeTooSkewed")


def _transient(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError, ResponseStreamingError

    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "") in _TRANSIENT_CODES
    if isinstance(exc, (HTTPClientError, ResponseStreamingError, IncompleteReadError, http.client.IncompleteRead,
                        ConnectionError, TimeoutError)):
        return True  # bodies cut short, resets, endpoint/read timeouts; not credentials or bad parameters
    try:
        import urllib3.exceptions as u3

        return isinstance(exc, (u3.ProtocolError, u3.ReadTimeoutError, u3.IncompleteRead))
    except ImportError:  # pragma: no cover - urllib3 ships with botocore
        return False


def with_retries(read: Callable[[], T], what: str, policy: RetryPolicy = DEFAULT_POLICY,
                 transient: Callable[[BaseException], bool] = _transient) -> T:
    """``read()`` until it succeeds, at most ``policy.attempts`` times; non-transient errors pass."""
    delay = policy.backoff_s
    for attempt in range(1, policy.attempts + 1):
        try:
            return read()
        except Exception as exc:  # sorted just below: only transient ones are retried
            if not transient(exc):
                raise
            reason = f"{type(exc).__name__}: {exc}"
            if attempt == policy.attempts:
                raise RetryError(f"read_failed: {what}: gave up after {attempt} attempts; last error {reason}") from exc
            log.info("retrying %s (attempt %d of %d) after %s", what, attempt + 1, policy.attempts, reason)
            time.sleep(min(policy.max_backoff_s, delay) * (0.5 + random.random()))
            delay *= 2
    raise AssertionError("unreachable")


def read_s3_object(bucket: str, key: str, client=None, byte_range: tuple[int, int] | None = None,
                   policy: RetryPolicy = DEFAULT_POLICY) -> bytes:
    """The object's bytes (or ``byte_range`` = (offset, size) of them), the whole GET retried."""
    from botocore.exceptions import ClientError

    from .storage import s3_client

    client = client or s3_client()
    extra = {}
    if byte_range is not None:
        offset, size = byte_range
        if size <= 0:
            return b""
        extra["Range"] = f"bytes={offset}-{offset + size - 1}"

    def read() -> bytes:
        try:
            response = client.get_object(Bucket=bucket, Key=key, **extra)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in _NOT_FOUND:
                raise FileNotFoundError(f"not_found: s3://{bucket}/{key}") from exc
            raise
        body = response["Body"].read()
        expected = response.get("ContentLength")
        if expected is not None and len(body) != expected:
            raise http.client.IncompleteRead(body, expected - len(body))
        return body

    return with_retries(read, f"s3://{bucket}/{key}" + (f" [{extra['Range']}]" if extra else ""), policy)


class ResumingS3Reader(io.RawIOBase):
    """A streamed GET that, when the body is cut short, resumes with a ranged GET from where it
    stopped (at most ``policy.attempts`` times running); used for whole-shard scans."""

    def __init__(self, client, bucket: str, key: str, policy: RetryPolicy = DEFAULT_POLICY):
        self.client, self.bucket, self.key, self.policy = client, bucket, key, policy
        self.position = 0
        self._body = None
        self._length: int | None = None

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        from botocore.exceptions import ClientError

        extra = {"Range": f"bytes={self.position}-"} if self.position else {}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key, **extra)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in _NOT_FOUND:
                raise FileNotFoundError(f"not_found: s3://{self.bucket}/{self.key}") from exc
            raise
        if self._length is None:
            self._length = int(response.get("ContentLength") or 0)
        self._body = response["Body"]

    def _read_some(self, size: int) -> bytes:
        if self._length is not None and self.position >= self._length:
            return b""
        if self._body is None:
            self._open()
        try:
            chunk = self._body.read(size)
        except Exception:
            self._body = None  # resume from self.position on the next try
            raise
        if not chunk and self._length is not None and self.position < self._length:
            self._body = None
            raise http.client.IncompleteRead(b"", self._length - self.position)
        return chunk

    def readinto(self, buffer) -> int:
        chunk = with_retries(lambda: self._read_some(len(buffer)), f"s3://{self.bucket}/{self.key} @ {self.position}",
                             self.policy)
        buffer[: len(chunk)] = chunk
        self.position += len(chunk)
        return len(chunk)

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None
        super().close()
