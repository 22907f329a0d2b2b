"""Dataset statistics: hours, counts, duration buckets and annotation layers, as a dict, as text
and as a self-contained HTML page (inline SVG histogram, no plotting library).

Reads the index parts and layer files only; never writes into the dataset except the report a
caller asks for.
"""

from __future__ import annotations

import html
import io
import json
import os

import pyarrow.parquet as pq

from .dataset import list_layers, read_dataset_json
from .index import read_index_parts
from .layers import layer_dir, layer_parts, read_failures, read_layer_meta, version_status
from .sampling import BUCKET_LABELS
from .storage import Storage, is_s3, split_s3


def _bucket_rows(videos: list[dict], clips: list[dict]) -> list[dict]:
    def empty(label: str) -> dict:
        return {"bucket": label, "videos": 0, "video_hours": 0.0, "clips": 0, "clip_hours": 0.0}

    rows = {label: empty(label) for label in BUCKET_LABELS}
    for items, count, hours in ((videos, "videos", "video_hours"), (clips, "clips", "clip_hours")):
        for item in items:
            row = rows.setdefault(item["bucket"], empty(item["bucket"]))
            row[count] += 1
            row[hours] += item["duration"] / 3600.0
    return list(rows.values())


# JSON fields that are references, not written text: left out of a layer's word count
_JSON_REFS = (r'"(task|scope)":\s*"[^"]*"|"(evidence_clip_ids|evidence_spans|clip_id|segment|segments|answer)":'
              r'\s*(\[[^\]]*\]+|"[0-9a-f_]{8,}"|-?[0-9.]+)')


def value_words(table) -> int:
    """Words of a layer part's values, in Arrow: text values as written; JSON values without
    their keys and reference fields (clip ids, spans, counts)."""
    import pyarrow.compute as pc

    values = pc.if_else(pc.equal(table["value_type"], "json"), pc.replace_substring_regex(
        pc.replace_substring_regex(pc.replace_substring_regex(table["value"], _JSON_REFS, " "),
                                   r'"[A-Za-z_]+":', " "), r'[{}\[\]",]', " "), table["value"])
    return int(pc.sum(pc.count_substring_regex(values, r"\S+")).as_py() or 0)


def failure_reasons(failures, top: int = 8) -> list[dict]:
    """Failures grouped by stage and reason (numbers folded to N so alike reasons group)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if failures.num_rows == 0:
        return []
    folded = pa.table({"stage": failures["stage"], "reason": pc.utf8_slice_codeunits(
        pc.replace_substring_regex(failures["reason"], r"[0-9]+(\.[0-9]+)?", "N"), 0, 120)})
    counted = folded.group_by(["stage", "reason"]).aggregate([("stage", "count")]).sort_by([("stage_count", "descending")])
    return [{"stage": r["stage"], "reason": r["reason"], "count": r["stage_count"]} for r in counted.slice(0, top).to_pylist()]


def layer_stats(storage: Storage, layer: str, version: str, totals: dict | None = None) -> dict:
    """Rows, words, failures by reason and coverage of one layer version, and what its
    ``layer.json`` says produced it; ``totals``: the dataset's video and clip counts (coverage)."""
    import pyarrow as pa

    rows = video_rows = words = clips_covered = videos_covered = 0
    parts = layer_parts(storage, layer, version)
    for part in parts:
        table = pq.read_table(io.BytesIO(storage.read_bytes(part)), columns=["key", "clip_id", "value", "value_type"])
        rows += table.num_rows
        video_rows += table["clip_id"].null_count
        words += value_words(table)
        clips_covered += pa.compute.count_distinct(table["clip_id"]).as_py()  # nulls are not counted
        videos_covered += pa.compute.count_distinct(table["key"]).as_py()  # a video lies in one part
    has_meta = storage.exists(f"{layer_dir(layer, version)}/layer.json")
    meta = read_layer_meta(storage, layer, version) if has_meta else {}
    status = version_status(storage, layer, version) if parts else {}
    shown = meta.get("status")
    if shown == "in_progress":
        shown = "partial (a run is in progress or stopped: rerun it to finish)"
    elif shown and status and not str(shown).startswith("partial"):
        shown = status["status"]  # from the parts as they are now (a retry may have filled failures)
    totals = totals or {}
    return {
        "layer": layer,
        "version": version,
        "rows": rows,
        "clip_rows": rows - video_rows,
        "video_rows": video_rows,
        "videos": videos_covered,
        "parts": len(parts),
        "words": words,
        "clip_share": clips_covered / totals["clips"] if totals.get("clips") else 0.0,
        "video_share": videos_covered / totals["videos"] if totals.get("videos") else 0.0,
        "failed_items": status.get("failed_items", 0),
        "rejected_items": status.get("rejected_items", 0),
        "failures": failure_reasons(read_failures(storage, layer, version)),
        "producer": meta.get("producer"),
        "status": shown,
    }


def dataset_stats(storage: Storage) -> dict:
    """Everything ``longvid stats`` reports, as plain JSON-able data (counts from the index parts)."""
    meta = read_dataset_json(storage)
    videos_table, clips_table = read_index_parts(storage)
    videos = videos_table.select(["key", "shard", "duration", "bucket", "visual_tokens"]).to_pylist()
    clips = clips_table.select(["duration", "bucket"]).to_pylist()
    return {
        "dataset": storage.root,
        "name": dataset_name(storage.root),
        "schema_version": meta.get("schema_version"),
        "hours": sum(v["duration"] for v in videos) / 3600.0,
        "clip_hours": sum(c["duration"] for c in clips) / 3600.0,
        "counts": {
            "videos": len(videos),
            "clips": len(clips),
            "shards": len({v["shard"] for v in videos}),
        },
        "visual_tokens_stage3": sum(v["visual_tokens"] for v in videos),
        "buckets": _bucket_rows(videos, clips),
        "layers": [layer_stats(storage, name, version, {"videos": len(videos), "clips": len(clips)})
                   for name, versions in list_layers(storage).items() for version in versions],
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
        lines.append(f"  annotation layers ({sum(x.get('words', 0) for x in stats['layers'])} words in all):")
        for layer in stats["layers"]:
            lines.append(f"    {layer['layer']}/{layer['version']}: {layer['rows']} rows "
                         f"({layer['clip_rows']} clip, {layer['video_rows']} video) over {layer['videos']} videos, "
                         f"producer {producer_text(layer['producer'])}"
                         + (f", {layer['status']}" if layer["status"] else ""))
            lines.append(f"      {layer.get('words', 0)} words; covers {100 * layer.get('clip_share', 0):.1f} % of clips, "
                         f"{100 * layer.get('video_share', 0):.1f} % of videos; {layer.get('failed_items', 0)} failed, "
                         f"{layer.get('rejected_items', 0)} rejected")
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
                      x.get("words", 0), f"{100 * x.get('clip_share', 0):.1f} %", f"{100 * x.get('video_share', 0):.1f} %",
                      x.get("failed_items", 0), x.get("rejected_items", 0), producer_text(x["producer"]),
                      x["status"] or "-"] for x in stats["layers"]]) if stats["layers"] else "<p>none</p>"
    failures = [[x["layer"] + "/" + x["version"], f["stage"], f["reason"], f["count"]]
                for x in stats["layers"] for f in x.get("failures", [])]
    if stats["layers"]:
        layers += f"<p>{sum(x.get('words', 0) for x in stats['layers'])} words in all layers</p>"
    if failures:
        layers += "<h3>Failures by reason</h3>" + _table(["layer", "stage", "reason", "count"], failures)
    title = html.escape(f"LongVid dataset {stats['name']}")
    style = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{style}</style>"
            f"</head><body>\n<h1>{title}</h1>\n<p>{html.escape(stats['dataset'])}</p>\n{summary}\n"
            f"<h2>Duration histogram</h2>\n{histogram_svg(stats['buckets'])}\n<h2>Duration buckets</h2>\n{buckets}\n"
            f"<h2>Annotation layers</h2>\n{layers}\n</body></html>\n")


def write_report(stats: dict, path: str) -> str:
    """Write the HTML report to a local ``path`` atomically; returns the absolute path."""
    from .storage import LocalStorage

    path = os.path.abspath(os.path.expanduser(path))
    LocalStorage(os.path.dirname(path)).write_bytes(os.path.basename(path), render_html(stats).encode("utf-8"))
    return path
