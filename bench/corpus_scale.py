"""Dataset-wide tools at corpus scale: a synthetic index in the real schemas (per-shard parts,
empty stub shards, no media), and each tool timed in a fresh process with its peak RSS over the
bare import; on the S3 test server (moto, behind a counting proxy) the requests are counted too.

    python bench/corpus_scale.py --clips 1000000 --shards 417
    python bench/corpus_scale.py --clips 10000000 --shards 4167 --s3-clips 100000 --s3-shards 300
    python bench/corpus_scale.py --sizes 1000000:417,10000000:4167 --peer /work/main  # growth, ratio
    python bench/corpus_scale.py --sizes 72000000:30000 --measures index,open,stats,finalize,ingest_start
    python bench/corpus_scale.py --measures index,open,stats,finalize,ingest_start --sizes 0:0 \
        --s3-sizes 24000:10,240000:100                              # S3 requests at two shard counts

Measures: ``longvid index`` (compaction of a parts-only dataset), stream open + first 1,000
samples (``ShardStream``, unit clip, decode off) with 1 and 4 dataloader workers, ``stats``,
``finalize`` after adding one shard, export (``export llava``, unit video: it has no bucket
filter), and ingest start (``_committed_state``). Writes only under --out.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import io
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a child measuring the peer (--peer: another checkout, e.g. the main branch) imports its longvid
sys.path.insert(0, os.environ.get("LONGVID_BENCH_REPO") or REPO)

MEASURES = ["index", "open", "stream1", "stream4", "stats", "finalize", "export", "ingest_start"]
PEER_MEASURES = ["stream1", "stats", "finalize", "ingest_start"]  # what the previous layout's code also has


# -- in the child: one measurement -------------------------------------------------------------
def _status(pid: int | str = "self") -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM", "VmRSS")):
                name, value = line.split(":")
                out[name] = int(value.split()[0]) // 1024  # kB -> MB
    return out


def _children() -> list[int]:
    me, kids = os.getpid(), []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                        kids.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def _stream(dataset: str, workers: int, samples: int) -> dict:
    from longvid.shards.stream import ShardStream, SourceSpec, StreamConfig

    t0 = time.perf_counter()
    stream = ShardStream(StreamConfig(sources=[SourceSpec(dataset)], unit="clip", decode=False))
    opened = time.perf_counter() - t0
    worker_peaks: list[int] = []
    first = None
    for i, _ in enumerate(stream.loader(num_workers=workers)):
        if first is None:
            first = time.perf_counter() - t0
        if i + 1 >= samples:
            worker_peaks = [_status(pid).get("VmHWM", 0) for pid in _children()]
            break
    return {"open_s": opened, "first_s": first, "seconds": time.perf_counter() - t0, "worker_peak_mb": worker_peaks}


def measure(name: str, dataset: str, out: str) -> dict:
    """Run one tool; returns its figures (the caller adds time and RSS)."""
    from longvid.shards import Storage

    storage = Storage.for_uri(dataset)
    if name == "index":
        from longvid.cli import main

        return {"rc": main(["index", dataset])}
    if name == "open":  # what the stream does per shard group: the shard table, then one group's rows
        from longvid.shards import open_index

        index = open_index(storage)
        clips = index.read_clips(index.shard_names[:4], columns=["clip_id", "key", "start", "end"])
        return {"group_clips": clips.num_rows}
    if name.startswith("stream"):
        return _stream(dataset, int(name[len("stream"):]), 1000)
    if name == "stats":
        from longvid.shards.stats import dataset_stats

        stats = dataset_stats(storage)
        return {"clips": stats["counts"]["clips"]}
    if name == "finalize":  # the parent has just added one shard (tar stub + index part)
        from longvid.shards import finalize

        meta = finalize(storage)
        return {"clips": meta["counts"]["clips"]}
    if name == "export":
        from longvid.pipelines.export import LlavaExportConfig, run_export_llava

        summary = run_export_llava(dataset, os.path.join(out, "export"), LlavaExportConfig(unit="video"),
                                   log=lambda *_: None)
        return {"summary_keys": sorted(summary)[:8]}
    if name == "ingest_start":
        import inspect

        import pyarrow.parquet as pq

        from longvid.pipelines.ingest import _committed_state

        first = next(p for p in storage.list("index/parts") if p.endswith(".videos.parquet"))
        keys = pq.read_table(io.BytesIO(storage.read_bytes(first)), columns=["key"])["key"].to_pylist()
        manifest = keys[:500] + [f"{i:016x}" for i in range(500)]  # some committed, the rest new
        if len(inspect.signature(_committed_state).parameters) == 2:
            owners, committed, _ = _committed_state(storage, manifest)
        else:  # the previous version: every committed key
            owners, committed, _ = _committed_state(storage)
        return {"owners": len(owners), "committed": len(committed)}
    raise ValueError(f"unknown measure {name!r}")


# modules a measurement imports anyway (torch for the stream, Ray for ingest): the baseline
PREIMPORT = {"stream1": "longvid.shards.stream", "stream4": "longvid.shards.stream",
             "export": "longvid.pipelines.export", "ingest_start": "longvid.pipelines.ingest",
             "stats": "longvid.shards.stats", "index": "longvid.cli", "finalize": "longvid.shards"}


def child_main(name: str, dataset: str, out: str) -> None:
    import importlib

    importlib.import_module(PREIMPORT.get(name, "longvid.shards"))
    base = _status()["VmRSS"]  # the bare import: what the process holds before the tool runs
    t0 = time.perf_counter()
    result = measure(name, dataset, out)
    result.update(name=name, wall_s=time.perf_counter() - t0, peak_mb=_status()["VmHWM"] - base, import_mb=base)
    # worker figures stay absolute VmHWM: a forked worker's own peak is not comparable with the
    # parent's baseline (it shares, and need not touch, the parent's pages)
    print("RESULT " + json.dumps(result), flush=True)


# -- in the parent: build, run children, count S3 requests -----------------------------------
def build(dataset: str, clips: int, shards: int, clips_per_video: int) -> dict:
    """A parts-only dataset (today's layout before ``longvid index``) of ``clips`` clip rows."""
    from longvid.shards import Storage
    from longvid.synthetic_index import write_synthetic_shard, write_synthetic_summary_layer

    storage = Storage.for_uri(dataset)
    per_shard = max(1, clips // shards)
    videos = max(1, per_shard // clips_per_video)
    t0 = time.perf_counter()
    for number in range(shards):
        write_synthetic_shard(storage, number, videos, clips_per_video)
    write_synthetic_summary_layer(storage, shards, videos)  # export needs a layer to build conversations
    storage.write_bytes("dataset.json", json.dumps({"schema_version": 1, "format": "longvid-webdataset"}).encode())
    return {"build_s": time.perf_counter() - t0, "clip_rows": shards * videos * clips_per_video,
            "video_rows": shards * videos, "shards": shards}


def add_one_shard(dataset: str, shards: int, clips_per_video: int) -> None:
    """What an ingest run adds before its finalize: one shard (stub tar + index part)."""
    from longvid.shards import Storage
    from longvid.synthetic_index import write_synthetic_shard

    write_synthetic_shard(Storage.for_uri(dataset), shards, 40, clips_per_video)


class CountingProxy(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """Forwards every request to the S3 server and counts them by method (a request log)."""

    daemon_threads = True

    def __init__(self, upstream: int):
        self.upstream, self.counts, self.lock = upstream, Counter(), threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        with self.server.lock:
            self.server.counts[self.command] += 1
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        if self.command == "HEAD":  # no body: keep the object's own length
            self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
            self.end_headers()
        else:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward


def run_child(name: str, dataset: str, out: str, env: dict, timeout: float) -> dict:
    args = [sys.executable, os.path.abspath(__file__), "--child", name, "--dataset", dataset, "--out", out]
    try:
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"name": name, "error": f"over {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"name": name, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_size(clips: int, shards: int, args, s3: bool = False) -> tuple[dict, list[dict]]:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = os.path.join(args.out, f"{'s3' if s3 else 'local'}-{clips}")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    proxy = server = None
    if s3:
        import logging

        import boto3
        from moto.server import ThreadedMotoServer

        port = _free_port()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request log lines
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        proxy = CountingProxy(port)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        creds = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.server_address[1]}", "AWS_ACCESS_KEY_ID": "bench",
                 "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
        env.update(creds)
        os.environ.update(creds)
        boto3.client("s3").create_bucket(Bucket="corpus-bench")
        dataset = "s3://corpus-bench/ds"
    else:
        dataset = os.path.join(out, "ds")
    built = build(dataset, clips, shards, args.clips_per_video)
    print(f"built {built['clip_rows']:,} clip rows, {built['video_rows']:,} videos, {shards:,} shards "
          f"in {built['build_s']:.0f} s ({'S3' if s3 else 'local'})", flush=True)
    peer = os.path.join(out, "peer-ds") if args.peer and not s3 else ""
    if peer:  # the same parts-only dataset, for the previous code
        shutil.copytree(dataset, peer)
    results = []
    try:
        for name in args.measures:
            if name == "finalize":
                add_one_shard(dataset, shards, args.clips_per_video)
            if proxy:
                proxy.counts.clear()
            result = run_child(name, dataset, out, env, args.timeout)
            if proxy:
                result["requests"] = dict(proxy.counts)
            results.append(result)
            print(_row(built, result), flush=True)
            if peer and name in PEER_MEASURES:
                if name == "finalize":
                    add_one_shard(peer, shards, args.clips_per_video)
                peer_env = dict(env, PYTHONPATH=args.peer, LONGVID_BENCH_REPO=args.peer)
                old = run_child(name, peer, out, peer_env, args.timeout)
                old["name"] = f"{name} (peer)"
                if "error" not in old and "error" not in result:
                    old["ratio"] = old["wall_s"] / max(result["wall_s"], 1e-3)
                results.append(old)
                print(_row(built, old), flush=True)
    finally:
        if proxy:
            proxy.shutdown()
        if server:
            server.stop()
    return built, results


def _row(built: dict, r: dict) -> str:
    if "error" in r:
        return f"{built['clip_rows']:>11,} {r['name']:>13}  ERROR {r['error']}"
    extra = ""
    if "open_s" in r:
        extra = f" open {r['open_s']:.2f}s first {r['first_s']:.2f}s workers peak {r['worker_peak_mb']} MB"
    if "ratio" in r:
        extra += f"  peer/this x{r['ratio']:.1f}"
    if "requests" in r:
        extra += f" requests {sum(r['requests'].values())} {r['requests']}"
    return f"{built['clip_rows']:>11,} {r['name']:>13} {r['wall_s']:>8.2f} s {r['peak_mb']:>7} MB{extra}"


def print_growth(first: tuple[dict, list[dict]], last: tuple[dict, list[dict]]) -> None:
    (b0, r0), (b1, r1) = first, last
    print(f"growth {b0['clip_rows']:,} -> {b1['clip_rows']:,} clip rows, {b0['shards']:,} -> {b1['shards']:,} shards "
          f"(x{b1['clip_rows'] / b0['clip_rows']:.1f}):")
    for a, b in zip(r0, r1):
        if "error" in a or "error" in b or a["name"] != b["name"]:
            continue
        line = (f"  {a['name']:>20}: time x{b['wall_s'] / max(a['wall_s'], 1e-3):.2f}, "
                f"peak RSS x{max(b['peak_mb'], 1) / max(a['peak_mb'], 1):.2f}")
        if "requests" in a:
            line += f", requests {sum(a['requests'].values())} -> {sum(b['requests'].values())}"
        print(line)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1_000_000, help="clip rows of the local dataset")
    parser.add_argument("--shards", type=int, default=417, help="shards (LongVid: ~2,400 clips per shard)")
    parser.add_argument("--sizes", default="", help="CLIPS:SHARDS,... several local sizes (growth is printed)")
    parser.add_argument("--clips-per-video", type=int, default=60, help="15 s clips of a 15 min video")
    parser.add_argument("--s3-clips", type=int, default=0, help="clip rows of the S3 run (0: no S3 run)")
    parser.add_argument("--s3-shards", type=int, default=100)
    parser.add_argument("--s3-sizes", default="", help="CLIPS:SHARDS,... several S3 sizes (request growth)")
    parser.add_argument("--measures", default=",".join(MEASURES), help=f"subset of {','.join(MEASURES)}")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "out", "corpus_scale"))
    parser.add_argument("--json", default="", help="also write every figure here")
    parser.add_argument("--peer", default="", help="another checkout (e.g. /work/main): its stream, stats, "
                        "finalize and ingest start run on a copy of the parts-only dataset, for the ratio")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.dataset, args.out)
        return 0
    args.measures = [m for m in args.measures.split(",") if m]
    sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes.split(",") if s] or [(args.clips, args.shards)]
    sizes = [size for size in sizes if size[1] > 0]  # 0:0 = no local run
    print(f"{'clip rows':>11} {'measure':>13} {'wall':>10} {'peak RSS over import':>10}")
    runs = [run_size(clips, shards, args) for clips, shards in sizes]
    s3_sizes = [tuple(int(x) for x in s.split(":")) for s in args.s3_sizes.split(",") if s]
    if args.s3_clips:
        s3_sizes.append((args.s3_clips, args.s3_shards))
    for clips, shards in s3_sizes:
        runs.append(run_size(clips, shards, args, s3=True))
    if len(sizes) > 1:
        print_growth(runs[0], runs[len(sizes) - 1])
    if len(s3_sizes) > 1:
        print_growth(runs[len(sizes)], runs[-1])
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"built": b, "results": r} for b, r in runs], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
