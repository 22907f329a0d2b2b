"""The dataset lease: one writer at a time (ingest, annotate, index), readers never blocked.

A writer creates ``DATASET/_lease.json`` create-only (``O_EXCL`` locally, ``If-None-Match: *`` on
S3) before it writes anything, renews it from a daemon thread while it runs and deletes it when it
ends, by error or Ctrl-C too. A second writer refuses with one line naming the holder, or waits
(``wait_s``). A lease not renewed for ``stale_after_s`` belongs to a dead run: it is taken over by
a compare-and-swap on its version (so of two takers at most one wins) and the takeover is noted.
The lease holds who and when, never a credential; readers never look at it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from .storage import Storage

log = logging.getLogger("longvid")

LEASE_PATH = "_lease.json"


@dataclass
class LeaseConfig:
    stale_after_s: float = 120.0  # no renewal this long = the holder is dead; 4 missed heartbeats, above any S3 hiccup
    wait_s: float = 0.0  # how long a second writer waits for the lease before refusing (0: refuse at once)
    heartbeat_s: float | None = None  # seconds between renewals; unset: stale_after_s / 4

    def __post_init__(self):
        if not (self.stale_after_s and self.stale_after_s > 0):
            raise ValueError(f"lease.stale_after_s must be positive, got {self.stale_after_s!r}")
        if self.wait_s is None or self.wait_s < 0:
            raise ValueError(f"lease.wait_s must be 0 or more, got {self.wait_s!r}")
        if self.heartbeat_s is not None and not (0 < self.heartbeat_s < self.stale_after_s):
            raise ValueError(f"lease.heartbeat_s must be above 0 and below lease.stale_after_s, got {self.heartbeat_s!r}")

    @property
    def renew_every_s(self) -> float:
        return self.heartbeat_s or self.stale_after_s / 4


class LeaseHeldError(RuntimeError):
    """Another live run holds the dataset; ``str()`` is the one line the command line prints."""


class LeaseLostError(RuntimeError):
    """This run's lease was taken over (it was not renewed in time): stop writing."""


def read_holder(storage: Storage) -> tuple[dict | None, str] | None:
    """(holder, version) of the dataset's lease, None when nobody holds it; holder None if unreadable."""
    current = storage.read_versioned(LEASE_PATH)
    if current is None:
        return None
    data, version = current
    try:
        holder = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return None, version
    if not isinstance(holder, dict) or not isinstance(holder.get("token"), str):
        return None, version
    return holder, version


def _age_s(holder: dict | None) -> float | None:
    renewed = holder.get("renewed_at") if holder else None
    return time.time() - renewed if isinstance(renewed, (int, float)) else None


def stale_after_s(holder: dict | None, config: LeaseConfig) -> float:
    """When ``holder`` counts as dead: after the staleness it promised (its heartbeat is set by it),
    so a taker with a shorter setting can never take a live lease between two renewals."""
    promised = holder.get("stale_after_s") if holder else None
    if isinstance(promised, (int, float)) and not isinstance(promised, bool) and promised > 0:
        return float(promised)
    return config.stale_after_s


def gone_here(holder: dict | None) -> bool:
    """Whether ``holder`` ran on this host and its process no longer exists: a run killed here (kill -9,
    OOM) is taken over at once instead of after ``stale_after_s``. A pid reused by another process
    only delays the takeover until the lease is stale; hosts are told apart by hostname."""
    pid = holder.get("pid") if holder else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or holder.get("host") != socket.gethostname():
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by another user
        return False
    return False


def describe(holder: dict | None) -> str:
    """``run R (ingest, host H, pid P, renewed 12 s ago)``: who holds a lease, for people."""
    if holder is None:
        return "an unreadable lease"
    age = _age_s(holder)
    when = f"renewed {age:.0f} s ago" if age is not None else "never renewed"
    return (f"run {holder.get('run_id')} ({holder.get('command')}, host {holder.get('host')}, "
            f"pid {holder.get('pid')}, {when})")


class DatasetLease:
    """``with DatasetLease(storage, run_id, "ingest", config):`` the run's writes, then release."""

    def __init__(self, storage: Storage, run_id: str, command: str, config: LeaseConfig | None = None):
        self.storage, self.config = storage, config or LeaseConfig()
        now = time.time()
        self.holder = {"run_id": run_id, "command": command, "host": socket.gethostname(), "pid": os.getpid(),
                       "token": uuid.uuid4().hex, "taken_at": now, "renewed_at": now, "renewals": 0,
                       "stale_after_s": self.config.stale_after_s}  # the holder's promise: takers go by it
        self.version: str | None = None
        self.previous: dict | None = None  # the dead holder this run took over from, if any
        self.previous_gone = False  # whether it was taken over because its process had died on this host
        self.lost: str | None = None  # why the lease is no longer ours (set by the heartbeat)
        self._last_renewed = now
        self._lock = threading.Lock()  # one renew or release at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous_sigterm = None  # the SIGTERM handler to put back when the lease is released

    # -- taking it -------------------------------------------------------------------------
    def acquire(self) -> "DatasetLease":
        deadline = time.time() + self.config.wait_s
        poll_s = min(1.0, self.config.stale_after_s / 4)
        while True:
            if self.storage.put_if_absent(LEASE_PATH, self._body()) and self._adopt():
                break
            current = read_holder(self.storage)
            if current is None:
                continue  # released between our put and our read: try again
            holder, version = current
            if holder is not None and holder.get("token") == self.holder["token"]:
                self._adopt()  # our retried create landed the first time
                break
            age = _age_s(holder)
            dead = age is None or age > stale_after_s(holder, self.config) or gone_here(holder)
            if dead and self._take_over(holder, version):
                break
            if time.time() >= deadline:
                raise LeaseHeldError(self._busy_message(holder))
            time.sleep(max(0.01, min(poll_s, deadline - time.time())))
        self._thread = threading.Thread(target=self._heartbeat, name="longvid-lease", daemon=True)
        self._thread.start()
        return self

    def _take_over(self, holder: dict | None, version: str) -> bool:
        """Swap the stale lease for ours only if it is still that very version: one taker wins."""
        self.storage.replace_if_version(LEASE_PATH, self._body(), version)
        if not self._adopt():  # another taker won (or ours landed on a retry: then adopted)
            return False
        self.previous = holder or {"run_id": "unknown"}
        self.previous_gone = gone_here(holder)
        log.warning("dataset %s: %s", self.storage.root, self.takeover_note())
        return True

    def takeover_note(self) -> str | None:
        if self.previous is None:
            return None
        why = ("its process is gone from this host" if self.previous_gone else
               f"not renewed within {stale_after_s(self.previous, self.config):g} s")
        return f"lease_takeover: took over the lease of {describe(self.previous)}, {why}"

    def _busy_message(self, holder: dict | None) -> str:
        root = self.storage.root
        return (f"dataset {root} is in use by {describe(holder)}; wait for it to end, or pass --lease.wait-s SECONDS, "
                f"or if that run is dead remove {self.storage.uri(LEASE_PATH)} (it is taken over by itself after "
                f"{stale_after_s(holder, self.config):g} s without renewal)")

    # -- keeping it --------------------------------------------------------------------------
    def _body(self) -> bytes:
        self.holder["renewed_at"] = time.time()
        return json.dumps(self.holder, sort_keys=True).encode()

    def _adopt(self) -> bool:
        """True when the lease object is ours now; remembers its version for the next swap."""
        current = read_holder(self.storage)
        if current is None or current[0] is None or current[0].get("token") != self.holder["token"]:
            return False
        self.version = current[1]
        self._last_renewed = time.time()
        return True

    def renew(self) -> bool:
        """Overwrite our own lease (only if it is still ours); False, and ``lost`` set, when it is not."""
        with self._lock:
            if self._stop.is_set() or self.lost:
                return not self.lost
            try:
                self.holder["renewals"] += 1
                self.storage.replace_if_version(LEASE_PATH, self._body(), self.version or "")
                if self._adopt():  # ours also when a retried swap landed the first time
                    return True
                current = read_holder(self.storage)
                self.lost = f"now held by {describe(current[0])}" if current else "the lease object was removed"
            except Exception as exc:  # noqa: BLE001 - a store outage: keep trying until the lease would go stale
                log.warning("dataset %s: lease renewal failed (%s: %s)", self.storage.root, type(exc).__name__, exc)
                if time.time() - self._last_renewed < self.config.stale_after_s:
                    return True
                self.lost = f"not renewed for {self.config.stale_after_s:g} s ({type(exc).__name__})"
            log.error("dataset %s: this run's lease is lost: %s", self.storage.root, self.lost)
            return False

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.config.renew_every_s):
            if not self.renew():
                return

    def check(self) -> None:
        """Raise :class:`LeaseLostError` if another run took the dataset over; call between writes."""
        if self.lost:
            raise LeaseLostError(f"dataset {self.storage.root}: this run's lease was lost ({self.lost}); "
                                 "stop and rerun the same command once the other run has ended")

    # -- giving it back ----------------------------------------------------------------------
    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours; never raises (it runs in finally)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        with self._lock:
            try:
                current = read_holder(self.storage)
                if current and current[0] and current[0].get("token") == self.holder["token"]:
                    self.storage.delete_if_version(LEASE_PATH, current[1])
            except Exception as exc:  # noqa: BLE001 - the lease then goes stale and is taken over
                log.warning("dataset %s: could not release the lease (%s: %s); it is taken over after %g s",
                            self.storage.root, type(exc).__name__, exc, self.config.stale_after_s)

    def __enter__(self) -> "DatasetLease":
        self._previous_sigterm = _exit_on_sigterm()
        try:
            return self.acquire()
        except BaseException:
            _restore_sigterm(self._previous_sigterm)
            raise

    def __exit__(self, *exc_info) -> None:
        try:
            self.release()
        finally:
            _restore_sigterm(self._previous_sigterm)


def _exit_on_sigterm():
    """SIGTERM (``ray job stop``, a pod stopped) raises SystemExit in the main thread, so ``finally``
    blocks run and the lease is released instead of going stale; only where nobody set a handler."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return None

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    return signal.SIG_DFL


def _restore_sigterm(previous) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


__all__ = ["LEASE_PATH", "DatasetLease", "LeaseConfig", "LeaseHeldError", "LeaseLostError", "describe", "read_holder"]
