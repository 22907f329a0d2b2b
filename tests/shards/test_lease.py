"""The dataset lease, locally and on a real S3 server (moto): create-only, one winner of a race
(threads and processes), heartbeat renewal, stale takeover (one winner of two takers), release on
exception, a kill -9'd holder taken over once stale, and a retried create that meets its own write."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import boto3
import pytest

from longvid.shards.lease import LEASE_PATH, DatasetLease, LeaseConfig, LeaseHeldError, LeaseLostError, read_holder
from longvid.shards.storage import S3Storage, Storage
from tests.faultproxy import FaultProxy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = LeaseConfig(stale_after_s=0.6)  # heartbeat every 0.15 s


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return Storage.for_uri(str(tmp_path / "ds"))
    request.getfixturevalue("s3_server")
    bucket = f"lv-lease-{uuid.uuid4().hex[:12]}"  # the node name has brackets, which buckets may not
    boto3.client("s3").create_bucket(Bucket=bucket)
    return Storage.for_uri(f"s3://{bucket}/ds")


def _dead_holder(storage: Storage, age_s: float, run_id: str = "dead-run") -> None:
    holder = {"run_id": run_id, "command": "ingest", "host": "elsewhere", "pid": 1, "token": "f" * 32,
              "taken_at": time.time() - age_s, "renewed_at": time.time() - age_s}
    storage.write_bytes(LEASE_PATH, json.dumps(holder).encode())


def test_conditional_primitives(storage):
    assert storage.read_versioned("x.json") is None
    assert storage.put_if_absent("x.json", b"one")
    assert not storage.put_if_absent("x.json", b"two")
    data, version = storage.read_versioned("x.json")
    assert data == b"one"
    assert storage.replace_if_version("x.json", b"three", version)
    assert not storage.replace_if_version("x.json", b"four", version)  # that version is gone
    assert not storage.delete_if_version("x.json", version)
    data, version = storage.read_versioned("x.json")
    assert data == b"three" and storage.delete_if_version("x.json", version)
    assert not storage.exists("x.json")


def test_threads_racing_one_wins(storage):
    results, start = [], threading.Barrier(6)

    def take(i):
        # not FAST: staleness plays no part in a race, and a loaded machine can starve a 0.15 s heartbeat
        lease = DatasetLease(storage, f"run-{i}", "ingest", LeaseConfig(stale_after_s=60))
        start.wait()
        try:
            lease.acquire()
            results.append(("won", lease))
        except LeaseHeldError as exc:
            results.append(("busy", str(exc)))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    won = [r[1] for r in results if r[0] == "won"]
    busy = [r[1] for r in results if r[0] == "busy"]
    assert len(won) == 1 and len(busy) == 5
    holder = won[0].holder
    assert all(f"in use by run {holder['run_id']} (ingest, host {holder['host']}" in m for m in busy), busy
    assert all("\n" not in m and "--lease.wait-s" in m and LEASE_PATH in m for m in busy)
    won[0].release()
    assert read_holder(storage) is None


RACER = """
import json, os, sys, time
from longvid.shards.lease import DatasetLease, LeaseConfig, LeaseHeldError
from longvid.shards.storage import Storage
root, go, hold_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
while not os.path.exists(go):
    time.sleep(0.005)
lease = DatasetLease(Storage.for_uri(root), f"proc-{os.getpid()}", "ingest", LeaseConfig(stale_after_s=float(sys.argv[4])))
try:
    lease.acquire()
except LeaseHeldError:
    print("busy", flush=True)
    sys.exit(3)
print("won", flush=True)
time.sleep(hold_s)
lease.release()
"""


def _racer(root, go, hold_s, stale_after_s=5.0):
    return subprocess.Popen([sys.executable, "-c", RACER, root, go, str(hold_s), str(stale_after_s)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_processes_racing_one_wins(storage, tmp_path):
    go = str(tmp_path / "go")
    procs = [_racer(storage.root, go, hold_s=4.0) for _ in range(4)]
    time.sleep(2.0)  # the interpreters are up and polling for the start signal
    open(go, "w").close()
    outs = [p.communicate(timeout=60) for p in procs]
    words = sorted(o[0].strip() for o in outs)
    assert words == ["busy", "busy", "busy", "won"], [o[1][-500:] for o in outs]
    assert sorted(p.returncode for p in procs) == [0, 3, 3, 3]
    assert read_holder(storage) is None  # the winner released


def test_heartbeat_renews_and_keeps_others_out(storage):
    with DatasetLease(storage, "holder", "annotate", FAST) as lease:
        first = read_holder(storage)[0]["renewed_at"]
        time.sleep(4 * FAST.stale_after_s)  # well past stale_after: only renewals keep it live
        holder, _ = read_holder(storage)
        assert holder["renewals"] >= 3 and holder["renewed_at"] > first
        with pytest.raises(LeaseHeldError, match="in use by run holder"):
            DatasetLease(storage, "second", "ingest", FAST).acquire()
        lease.check()
    assert read_holder(storage) is None


def test_stale_lease_is_taken_over_and_noted(storage):
    _dead_holder(storage, age_s=10)
    with DatasetLease(storage, "new-run", "ingest", FAST) as lease:
        assert lease.previous["run_id"] == "dead-run"
        assert "took over the lease of run dead-run" in lease.takeover_note()
        assert read_holder(storage)[0]["run_id"] == "new-run"
    # a fresh (not stale) lease is never taken over
    _dead_holder(storage, age_s=0)
    with pytest.raises(LeaseHeldError, match="renewed 0 s ago"):
        DatasetLease(storage, "other", "ingest", LeaseConfig(stale_after_s=60)).acquire()


def test_staleness_is_the_holders_promise(storage):
    """A taker with a shorter stale_after_s cannot take a live lease between two of its renewals."""
    with DatasetLease(storage, "patient-holder", "ingest", LeaseConfig(stale_after_s=60, heartbeat_s=30)):
        time.sleep(0.3)
        with pytest.raises(LeaseHeldError, match="taken over by itself after 60 s"):
            DatasetLease(storage, "hasty", "ingest", LeaseConfig(stale_after_s=0.1)).acquire()


def test_two_takers_of_one_stale_lease_one_wins(storage):
    _dead_holder(storage, age_s=10)
    results, start = [], threading.Barrier(4)

    def take(i):
        lease = DatasetLease(storage, f"taker-{i}", "ingest", LeaseConfig(stale_after_s=5))
        start.wait()
        try:
            results.append(lease.acquire())
        except LeaseHeldError:
            results.append(None)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and len(results) == 4
    assert read_holder(storage)[0]["run_id"] == winners[0].holder["run_id"]
    winners[0].release()


def test_released_on_exception(storage):
    with pytest.raises(RuntimeError, match="boom"):
        with DatasetLease(storage, "fails", "ingest", FAST):
            assert read_holder(storage) is not None
            raise RuntimeError("boom")
    assert read_holder(storage) is None
    with DatasetLease(storage, "next", "ingest", FAST):
        pass


def test_lost_lease_is_reported(storage):
    with DatasetLease(storage, "slow", "ingest", LeaseConfig(stale_after_s=60)) as lease:
        _dead_holder(storage, age_s=0, run_id="usurper")  # as if another run took it over
        assert not lease.renew()
        with pytest.raises(LeaseLostError, match="run usurper"):
            lease.check()
    assert read_holder(storage)[0]["run_id"] == "usurper"  # release never deletes another run's lease


def test_killed_holder_on_this_host_is_taken_over_at_once(storage, tmp_path):
    go = str(tmp_path / "go")
    open(go, "w").close()
    holder = _racer(storage.root, go, hold_s=600, stale_after_s=600.0)
    assert holder.stdout.readline().strip() == "won"
    pid = holder.pid
    with pytest.raises(LeaseHeldError, match=f"pid {pid}"):  # alive and fresh: refused, naming it
        DatasetLease(storage, "right-away", "ingest", LeaseConfig(stale_after_s=600.0)).acquire()
    os.kill(pid, signal.SIGKILL)
    holder.wait(10)
    lease = DatasetLease(storage, "next", "ingest", LeaseConfig(stale_after_s=600.0))  # far from stale
    with lease:
        assert lease.previous["run_id"] == f"proc-{pid}"
        assert f"pid {pid}" in lease.takeover_note() and "process is gone" in lease.takeover_note()


def test_dead_pid_elsewhere_waits_for_staleness(storage):
    _dead_holder(storage, age_s=0, run_id="remote")  # host "elsewhere", pid 1: not ours to judge
    with pytest.raises(LeaseHeldError, match="run remote"):
        DatasetLease(storage, "here", "ingest", LeaseConfig(stale_after_s=60)).acquire()


def test_retried_create_meets_its_own_write(s3_bucket, s3_server, monkeypatch):
    """The first PUT lands but its answer is lost; botocore retries and gets 412: still ours."""
    proxy = FaultProxy(s3_server["AWS_ENDPOINT_URL"])
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        storage = S3Storage(f"s3://{s3_bucket}/ds")
        proxy.drop_next_puts(1)
        with DatasetLease(storage, "retried", "ingest", LeaseConfig(stale_after_s=60)) as lease:
            assert proxy.puts_to_drop == 0  # the dropped answer happened
            assert lease.previous is None and read_holder(storage)[0]["run_id"] == "retried"
        assert read_holder(storage) is None
        # someone else's lease is not mistaken for ours after a lost answer
        _dead_holder(storage, age_s=0, run_id="someone")
        with pytest.raises(LeaseHeldError, match="run someone"):
            DatasetLease(storage, "mine", "ingest", LeaseConfig(stale_after_s=60)).acquire()
    finally:
        proxy.close()
    assert boto3.client("s3", endpoint_url=s3_server["AWS_ENDPOINT_URL"]).head_object(
        Bucket=s3_bucket, Key=f"ds/{LEASE_PATH}")


HOLDER = """
import sys, time
from longvid.shards.lease import DatasetLease, LeaseConfig
from longvid.shards.storage import Storage
with DatasetLease(Storage.for_uri(sys.argv[1]), "interrupted-run", "ingest", LeaseConfig(stale_after_s=60)):
    print("held", flush=True)
    time.sleep(600)
"""


def test_ctrl_c_releases(storage):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, storage.root], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    assert read_holder(storage)[0]["run_id"] == "interrupted-run"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert "KeyboardInterrupt" in err  # interrupted in the sleep, released on the way out
    assert read_holder(storage) is None


def test_sigterm_releases(storage):
    """``ray job stop`` sends SIGTERM: the holder exits through its finally blocks and the lease is gone."""
    script = ("import sys, time\nfrom longvid.shards.lease import DatasetLease\nfrom longvid.shards.storage import Storage\n"
              "with DatasetLease(Storage.for_uri(sys.argv[1]), 'termed', 'ingest'):\n"
              "    print('won', flush=True)\n    time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, storage.root], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "won"
    assert read_holder(storage)[0]["run_id"] == "termed"
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(20) == 128 + signal.SIGTERM
    assert read_holder(storage) is None
