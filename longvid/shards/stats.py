"""Dataset statistics: hours, counts, duration buckets and annotation layers, as a dict, as text
and as a self-contained HTML page (inline SVG histogram, no plotting library).

Reads the shard table (O(shards)) and layer files only; a row-level figure such as the duration
histogram is a one-column Arrow scan accumulated per batch; never writes into the dataset except the report a
caller asks for.
"""

from __future__ import annotations

import html
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .catalog import DatasetIndex, arrow_filesystem, open_index
from .dataset import bucket_totals, list_layers, read_dataset_json, summary_counts
from .layers import layer_dir, layer_parts, read_failures, read_layer_meta, version_status
from .sampling import BUCKET_LABELS
from .score_stats import score_histograms, score_svg
from .storage import Storage, is_s3, split_s3


def _bucket_rows(shards: pa.Table) -> list[dict]:
    """Per duration bucket: videos, clips and their hours, summed over the shard table (O(shards))."""
    videos, clips = bucket_totals(shards["video_buckets"]), bucket_totals(shards["clip_buckets"])
    video_s = bucket_totals(shards["video_bucket_seconds"], float)
    clip_s = bucket_totals(shards["clip_bucket_seconds"], float)
    return [{"bucket": label, "videos": videos[label], "video_hours": video_s[label] / 3600.0,
             "clips": clips[label], "clip_hours": clip_s[label] / 3600.0} for label in BUCKET_LABELS]


def duration_histogram(index: DatasetIndex, unit: str = "clips", bins: int = 64,
                       max_seconds: float = 4 * 3600.0) -> tuple[np.ndarray, np.ndarray]:
    """(counts, bin edges) of ``duration`` over every video or clip row: a scan of one column,
    accumulated per record batch (memory: one batch)."""
    dataset = index.clips_dataset() if unit == "clips" else index.videos_dataset()
    edges = np.linspace(0.0, max_seconds, bins + 1)
    counts = np.zeros(bins, dtype=np.int64)
    for batch in dataset.to_batches(columns=["duration"]):
        values = batch.column(0).to_numpy(zero_copy_only=False)
        counts += np.histogram(np.clip(values, 0.0, max_seconds), bins=edges)[0]
    return counts, edges


def failure_class(reasons: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """The stable part of each reason (``engine error: ...`` → ``engine error``; numbers → N), so
    alike failures group: Arrow string kernels over the column, no Python per row."""
    head = pc.replace_substring_regex(reasons, r"^(clip [0-9a-f_]+: )?([^:]{1,48}): .*$", r"\2")
    return pc.utf8_slice_codeunits(pc.replace_substring_regex(head, r"[0-9]+(\.[0-9]+)?", "N"), 0, 100)


def failure_reasons(failures: pa.Table, top: int = 8) -> list[dict]:
    """Failures grouped by stage and reason class, the most frequent first (``top`` groups)."""
    if failures.num_rows == 0:
        return []
    folded = pa.table({"stage": failures["stage"], "reason": failure_class(failures["reason"]),
                       "retry": failures["retry"]})
    counted = folded.group_by(["stage", "reason"]).aggregate([("stage", "count"), ("retry", "all")])
    counted = counted.sort_by([("stage_count", "descending"), ("stage", "ascending"), ("reason", "ascending")])
    return [{"stage": r["stage"], "reason": r["reason"], "count": r["stage_count"], "retryable": r["retry_all"]}
            for r in counted.slice(0, top).to_pylist()]  # bounded: top groups


PRODUCER_KINDS = {"captioner": "caption", "writer": "writer", "speech": "speech"}


def _words_of(kind_name: str | None):
    """The layer kind's word count (``pipelines.kinds``), else the default one."""
    from ..pipelines.kinds import KINDS, load_kinds, value_words

    load_kinds()
    return KINDS[kind_name]().words if kind_name in KINDS else value_words


def layer_stats(storage: Storage, layer: str, version: str, totals: dict | None = None) -> dict:
    """Rows, words, coverage (share of the dataset's clips and videos with a row) and failures by
    reason of one layer version, and its status and producer; Arrow over one part at a time."""
    rows = video_rows = videos = clips_covered = words = 0
    parts = layer_parts(storage, layer, version)
    fs, base = arrow_filesystem(storage)
    has_meta = storage.exists(f"{layer_dir(layer, version)}/layer.json")
    meta = read_layer_meta(storage, layer, version) if has_meta else {}
    producer = meta.get("producer") if isinstance(meta.get("producer"), dict) else {}
    kind = meta.get("kind") or PRODUCER_KINDS.get(producer.get("kind", ""))  # versions from before the registry
    count_words = _words_of(kind)
    # the columns needed only, one part at a time; a layer without text (embeddings) has no value columns
    names = set(pq.read_schema(f"{base}/{parts[0]}", filesystem=fs).names) if parts else set()
    columns = [c for c in ("key", "clip_id", "value", "value_type") if c in names or c in ("key", "clip_id")]
    for part in parts:
        table = pq.read_table(f"{base}/{part}", filesystem=fs, columns=columns)
        rows += table.num_rows
        video_rows += table["clip_id"].null_count
        videos += pc.count_distinct(table["key"]).as_py()  # a video's rows live in one part
        clips_covered += pc.count_distinct(table["clip_id"]).as_py()  # nulls are not counted
        words += count_words(table)
    status = version_status(storage, layer, version, meta.get("planned_parts"),
                            "clip" if kind == "caption" else ("video" if kind else None)) if parts else {}
    shown = meta.get("status")
    if shown == "in_progress" or (parts and status.get("status") == "partial") or (has_meta and not parts):
        shown = "partial"  # a run in progress or stopped: rerun it to finish
    elif status:
        shown = status["status"]  # from the parts as they are now (a retry may have filled failures)
    totals = totals or {}
    clip_level = rows - video_rows > 0
    return {
        "layer": layer,
        "version": version,
        "kind": kind,
        "rows": rows,
        "clip_rows": rows - video_rows,
        "video_rows": video_rows,
        "videos": videos,
        "parts": len(parts),
        "words": words,
        "clip_share": clips_covered / totals["clips"] if clip_level and totals.get("clips") else None,
        "video_share": videos / totals["videos"] if totals.get("videos") else None,
        "failed_items": status.get("failed_items", 0),
        "rejected_items": status.get("rejected_items", 0),
        "failure_unit": status.get("unit"),
        "failures": failure_reasons(read_failures(storage, layer, version)),
        "producer": meta.get("producer"),
        "status": shown,
    }


def dataset_stats(storage: Storage) -> dict:
    """Everything ``longvid stats`` reports, as plain JSON-able data (counts from the shard table)."""
    meta = read_dataset_json(storage)
    shards = open_index(storage).shards
    summary = summary_counts(shards)
    return {
        "dataset": storage.root,
        "name": dataset_name(storage.root),
        "schema_version": meta.get("schema_version"),
        "hours": float(pc.sum(shards["seconds"]).as_py() or 0.0) / 3600.0,
        "clip_hours": float(pc.sum(shards["clip_seconds"]).as_py() or 0.0) / 3600.0,
        "counts": {key: summary["counts"][key] for key in ("videos", "clips", "shards")},
        "visual_tokens_stage3": summary["visual_tokens_stage3"],
        "buckets": _bucket_rows(shards),
        "layers": (layers := [layer_stats(storage, name, version, summary["counts"])
                              for name, versions in list_layers(storage).items() for version in versions]),
        "layer_words": sum(x["words"] for x in layers),
        "scores": score_histograms(storage),  # curation score distributions, to choose read-time thresholds
    }


def dataset_name(root: str) -> str:
    if is_s3(root):
        bucket, prefix = split_s3(root)
        return prefix.rstrip("/").rsplit("/", 1)[-1] or bucket
    return os.path.basename(os.path.normpath(root)) or "dataset"


def default_report_path(root: str) -> str:
    """``DATASET/report.html`` for a local dataset; ``./<name>-report.html`` for one on S3."""
    if is_s3(root):
        return os.path.abspath(f"{dataset_name(root)}-report.html")
    return os.path.join(os.path.abspath(os.path.expanduser(root)), "report.html")


def producer_text(producer) -> str:
    """A short human label of a layer's producer record (a dict from annotate, or a string)."""
    if producer is None:
        return "-"
    if isinstance(producer, dict):
        model = producer.get("model")
        if isinstance(model, dict):
            model = model.get("model") or model.get("name")
        label = model or producer.get("name") or producer.get("id")
        return str(label) if label else json.dumps(producer, sort_keys=True)[:120]
    return str(producer)


def share_text(share) -> str:
    return "-" if share is None else f"{100.0 * share:.1f} %"


def format_stats(stats: dict) -> str:
    c = stats["counts"]
    lines = [
        f"dataset {stats['dataset']}",
        f"  {stats['hours']:.3f} h of video in {c['videos']} videos, {c['clips']} clips "
        f"({stats['clip_hours']:.3f} h), {c['shards']} shards",
        f"  stage3 visual tokens: {stats['visual_tokens_stage3']}",
        "",
        f"  {'bucket':>10} {'videos':>8} {'hours':>9} {'clips':>8} {'hours':>9}",
    ]
    for b in stats["buckets"]:
        lines.append(f"  {b['bucket']:>10} {b['videos']:>8} {b['video_hours']:>9.3f} {b['clips']:>8} "
                     f"{b['clip_hours']:>9.3f}")
    lines.append("")
    if not stats["layers"]:
        lines.append("  annotation layers: none")
    else:
        lines.append(f"  annotation layers ({stats.get('layer_words', 0)} words in all):")
        for layer in stats["layers"]:
            lines.append(f"    {layer['layer']}/{layer['version']}: {layer['rows']} rows "
                         f"({layer['clip_rows']} clip, {layer['video_rows']} video) over {layer['videos']} videos, "
                         f"producer {producer_text(layer['producer'])}"
                         + (f", {layer['status']}" if layer["status"] else ""))
            lines.append(f"      {layer.get('words', 0)} words; covers {share_text(layer.get('clip_share'))} of clips, "
                         f"{share_text(layer.get('video_share'))} of videos; {layer.get('failed_items', 0)} failed "
                         f"{layer.get('failure_unit') or 'items'}, {layer.get('rejected_items', 0)} rejected")
            for f in layer.get("failures", []):
                lines.append(f"      {f['count']:>6} x {f['stage']}: {f['reason']}")
    return "\n".join(lines)


def histogram_svg(buckets: list[dict], width: int = 720, height: int = 280) -> str:
    """Grouped bars (videos, clips) per duration bucket; each bar's tooltip gives count and hours."""
    left, right, top, bottom = 44, 12, 28, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([max(b["videos"], b["clips"]) for b in buckets] + [1])
    slot = plot_w / max(len(buckets), 1)
    bar = slot * 0.36
    esc = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="duration histogram">',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="#444"/>',
             f'<text x="{left}" y="16" font-size="12">count per duration bucket</text>',
             f'<rect x="{width - 170}" y="6" width="10" height="10" fill="#3b6ea8"/>'
             f'<text x="{width - 155}" y="15" font-size="11">videos</text>',
             f'<rect x="{width - 100}" y="6" width="10" height="10" fill="#e39b3c"/>'
             f'<text x="{width - 85}" y="15" font-size="11">clips</text>']
    for i, b in enumerate(buckets):
        x0 = left + i * slot + slot * 0.14
        for j, (unit, colour) in enumerate((("videos", "#3b6ea8"), ("clips", "#e39b3c"))):
            count = b[unit]
            hours = b["video_hours" if unit == "videos" else "clip_hours"]
            h = plot_h * count / peak
            x, y = x0 + j * bar, top + plot_h - h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
                         f'<title>{esc(b["bucket"])} {unit}: {count} ({hours:.3f} h)</title></rect>')
            if count:
                parts.append(f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" font-size="10" '
                             f'text-anchor="middle">{count}</text>')
        parts.append(f'<text x="{left + i * slot + slot / 2:.1f}" y="{top + plot_h + 16}" font-size="11" '
                     f'text-anchor="middle">{esc(b["bucket"])}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" font-size="11" text-anchor="middle">'
                 f'duration bucket</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(stats: dict) -> str:
    """A self-contained page: summary, histogram (inline SVG), bucket and layer tables."""
    c = stats["counts"]
    summary = _table(["", "value"], [
        ["hours of video", f"{stats['hours']:.3f}"],
        ["videos", c["videos"]],
        ["clips", c["clips"]],
        ["clip hours", f"{stats['clip_hours']:.3f}"],
        ["shards", c["shards"]],
        ["stage3 visual tokens", stats["visual_tokens_stage3"]],
    ])
    buckets = _table(["bucket", "videos", "video hours", "clips", "clip hours"],
                     [[b["bucket"], b["videos"], f"{b['video_hours']:.3f}", b["clips"], f"{b['clip_hours']:.3f}"]
                      for b in stats["buckets"]])
    layers = _table(["layer", "version", "rows", "clip rows", "video rows", "videos", "words", "clips covered",
                     "videos covered", "failed", "rejected", "producer", "status"],
                    [[x["layer"], x["version"], x["rows"], x["clip_rows"], x["video_rows"], x["videos"],
                      x.get("words", 0), share_text(x.get("clip_share")), share_text(x.get("video_share")),
                      x.get("failed_items", 0), x.get("rejected_items", 0), producer_text(x["producer"]),
                      x["status"] or "-"] for x in stats["layers"]]) if stats["layers"] else "<p>none</p>"
    if stats["layers"]:
        layers += f"<p>{stats.get('layer_words', 0)} words in all layers</p>"
    failures = [[x["layer"] + "/" + x["version"], f["stage"], f["reason"], f["count"]]
                for x in stats["layers"] for f in x.get("failures", [])]
    if failures:
        layers += "<h3>Failures by reason</h3>" + _table(["layer", "stage", "reason", "count"], failures)
    title = html.escape(f"LongVid dataset {stats['name']}")
    style = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{style}</style>"
            f"</head><body>\n<h1>{title}</h1>\n<p>{html.escape(stats['dataset'])}</p>\n{summary}\n"
            f"<h2>Duration histogram</h2>\n{histogram_svg(stats['buckets'])}\n<h2>Duration buckets</h2>\n{buckets}\n"
            f"<h2>Annotation layers</h2>\n{layers}\n<h2>Curation scores</h2>\n"
            + "\n".join(score_svg(h) for h in stats.get("scores", [])) + "\n</body></html>\n")


def write_report(stats: dict, path: str) -> str:
    """Write the HTML report to a local ``path`` atomically; returns the absolute path."""
    from .storage import LocalStorage

    path = os.path.abspath(os.path.expanduser(path))
    LocalStorage(os.path.dirname(path)).write_bytes(os.path.basename(path), render_html(stats).encode("utf-8"))
    return path
