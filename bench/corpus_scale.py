"""Dataset-wide tools at corpus scale: a synthetic index in the real schemas (per-shard parts,
empty stub shards, no media), and each tool timed in a fresh process with its peak RSS over the
bare import; on the S3 test server (moto, behind a counting proxy) the requests are counted too.

    python bench/corpus_scale.py --clips 1000000 --shards 417
    python bench/corpus_scale.py --clips 10000000 --shards 4167 --s3-clips 100000 --s3-shards 300
    python bench/corpus_scale.py --sizes 1000000:417,10000000:4167   # growth between sizes

Measures: ``longvid index`` (compaction of a parts-only dataset), stream open + first 1,000
samples (``ShardStream``, unit clip, decode off) with 1 and 4 dataloader workers, ``stats``,
``finalize`` after adding one shard, export (``export llava``, unit video: it has no bucket
filter), and ingest start (``_committed_state``). Writes only under --out.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
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
sys.path.insert(0, REPO)

MEASURES = ["index", "stream1", "stream4", "stats", "finalize", "export", "ingest_start"]


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
    if name.startswith("stream"):
        return _stream(dataset, int(name[len("stream"):]), 1000)
    if name == "stats":
        from longvid.shards.stats import dataset_stats

        stats = dataset_stats(storage)
        return {"clips": stats["counts"]["clips"]}
    if name == "finalize":
        from longvid.shards import finalize, open_index
        from longvid.shards.writer import shard_number
        from longvid.synthetic_index import write_synthetic_shard

        last = open_index(storage).shards["shard"][-1].as_py()
        write_synthetic_shard(storage, shard_number(last) + 1, 40, 60)
        t0 = time.perf_counter()
        meta = finalize(storage)
        return {"finalize_s": time.perf_counter() - t0, "clips": meta["counts"]["clips"]}
    if name == "export":
        from longvid.pipelines.export import LlavaExportConfig, run_export_llava

        summary = run_export_llava(dataset, os.path.join(out, "export"), LlavaExportConfig(unit="video"),
                                   log=lambda *_: None)
        return {"records": sum(summary.get("counts", {}).values()) if isinstance(summary.get("counts"), dict) else None}
    if name == "ingest_start":
        from longvid.pipelines.ingest import _committed_state
        from longvid.shards import open_index

        keys = open_index(storage).read_videos(open_index(storage).shard_names[:3], columns=["key"])["key"]
        manifest = keys.to_pylist()[:500] + [f"{i:016x}" for i in range(500)]  # half committed, half new
        owners, committed, next_shard = _committed_state(storage, manifest)
        return {"owners": len(owners), "committed_in_manifest": len(committed)}
    raise ValueError(f"unknown measure {name!r}")


def child_main(name: str, dataset: str, out: str) -> None:
    base = _status()["VmRSS"]  # after the bare imports of this script
    import longvid.shards  # noqa: F401  (the package a tool needs anyway)

    base = _status()["VmRSS"]
    t0 = time.perf_counter()
    result = measure(name, dataset, out)
    result.update(name=name, wall_s=time.perf_counter() - t0, peak_mb=_status()["VmHWM"] - base, import_mb=base)
    if "worker_peak_mb" in result:
        result["worker_peak_mb"] = [peak - base for peak in result["worker_peak_mb"]]
    print("RESULT " + json.dumps(result), flush=True)


# -- in the parent: build, run children, count S3 requests -----------------------------------
def build(dataset: str, clips: int, shards: int, clips_per_video: int) -> dict:
    """A parts-only dataset (today's layout before ``longvid index``) of ``clips`` clip rows."""
    from longvid.shards import Storage
    from longvid.synthetic_index import write_synthetic_shard

    storage = Storage.for_uri(dataset)
    per_shard = max(1, clips // shards)
    videos = max(1, per_shard // clips_per_video)
    t0 = time.perf_counter()
    for number in range(shards):
        write_synthetic_shard(storage, number, videos, clips_per_video)
    storage.write_bytes("dataset.json", json.dumps({"schema_version": 1, "format": "longvid-webdataset"}).encode())
    return {"build_s": time.perf_counter() - t0, "clip_rows": shards * videos * clips_per_video,
            "video_rows": shards * videos, "shards": shards}


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
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
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
        import boto3
        from moto.server import ThreadedMotoServer

        port = _free_port()
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
    results = []
    try:
        for name in args.measures:
            if proxy:
                proxy.counts.clear()
            result = run_child(name, dataset, out, env, args.timeout)
            if proxy:
                result["requests"] = dict(proxy.counts)
            results.append(result)
            print(_row(built, result), flush=True)
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
        extra = f" open {r['open_s']:.2f}s first {r['first_s']:.2f}s workers +{r['worker_peak_mb']} MB"
    if "finalize_s" in r:
        extra = f" (finalize alone {r['finalize_s']:.2f}s)"
    if "requests" in r:
        extra += f" requests {sum(r['requests'].values())} {r['requests']}"
    return f"{built['clip_rows']:>11,} {r['name']:>13} {r['wall_s']:>8.2f} s {r['peak_mb']:>7} MB{extra}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1_000_000, help="clip rows of the local dataset")
    parser.add_argument("--shards", type=int, default=417, help="shards (LongVid: ~2,400 clips per shard)")
    parser.add_argument("--sizes", default="", help="CLIPS:SHARDS,... several local sizes (growth is printed)")
    parser.add_argument("--clips-per-video", type=int, default=60, help="15 s clips of a 15 min video")
    parser.add_argument("--s3-clips", type=int, default=0, help="clip rows of the S3 run (0: no S3 run)")
    parser.add_argument("--s3-shards", type=int, default=100)
    parser.add_argument("--measures", default=",".join(MEASURES), help=f"subset of {','.join(MEASURES)}")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "out", "corpus_scale"))
    parser.add_argument("--json", default="", help="also write every figure here")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.dataset, args.out)
        return 0
    args.measures = [m for m in args.measures.split(",") if m]
    sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes.split(",") if s] or [(args.clips, args.shards)]
    print(f"{'clip rows':>11} {'measure':>13} {'wall':>10} {'peak RSS over import':>10}")
    runs = [run_size(clips, shards, args) for clips, shards in sizes]
    if args.s3_clips:
        runs.append(run_size(args.s3_clips, args.s3_shards, args, s3=True))
    if len(sizes) > 1:
        (b0, r0), (b1, r1) = runs[0], runs[len(sizes) - 1]
        print(f"growth {b0['clip_rows']:,} -> {b1['clip_rows']:,} clip rows "
              f"(x{b1['clip_rows'] / b0['clip_rows']:.1f}):")
        for a, b in zip(r0, r1):
            if "error" not in a and "error" not in b:
                print(f"  {a['name']:>13}: time x{b['wall_s'] / max(a['wall_s'], 1e-3):.2f}, "
                      f"peak RSS x{max(b['peak_mb'], 1) / max(a['peak_mb'], 1):.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"built": b, "results": r} for b, r in runs], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
