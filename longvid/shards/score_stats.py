"""Distributions of the curation scores (``motion_score``, near-duplicate distances) for ``longvid
stats``: fixed-bin histograms accumulated one index part at a time, reading only the score
columns, so memory does not grow with the dataset. And their inline SVG for the HTML report.
"""

from __future__ import annotations

import html
import io

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .index import PARTS_DIR
from .storage import Storage

# score → (index file suffix, column, bin edges): fixed edges so parts add up
SCORES = {
    "motion_score": (".clips.parquet", "motion_score", np.linspace(0.0, 0.2, 21)),
    "clip near-duplicate distance": (".clips.parquet", "near_duplicate_distance", np.arange(0, 66, 2)),
}


def score_histograms(storage: Storage) -> list[dict]:
    """[{score, edges, counts, missing, matched}] over every index part."""
    out = {name: {"score": name, "edges": edges.tolist(), "counts": np.zeros(len(edges) - 1, np.int64), "missing": 0}
           for name, (_, _, edges) in SCORES.items()}
    for path in storage.list(PARTS_DIR):
        for name, (suffix, column, edges) in SCORES.items():
            if not path.endswith(suffix):
                continue
            table = pq.read_table(io.BytesIO(storage.read_bytes(path)))
            if column not in table.column_names:
                out[name]["missing"] += table.num_rows
                continue
            values = table[column]
            out[name]["missing"] += values.null_count
            present = pc.drop_null(values).to_numpy(zero_copy_only=False).astype(np.float64)
            out[name]["counts"] += np.histogram(np.clip(present, edges[0], edges[-1]), bins=edges)[0]
    return [dict(h, counts=h["counts"].tolist()) for h in out.values()]


def score_svg(hist: dict, width: int = 720, height: int = 200) -> str:
    """Bars of one score's histogram; each bar's tooltip gives its range and count."""
    left, bottom, top = 44, 30, 20
    plot_w, plot_h = width - left - 12, height - top - bottom
    counts, edges = hist["counts"], hist["edges"]
    peak, slot = max(counts + [1]), plot_w / max(len(counts), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(hist["score"])} histogram">',
             f'<text x="{left}" y="14" font-size="12">{html.escape(hist["score"])} '
             f'(no value: {hist["missing"]})</text>']
    for i, count in enumerate(counts):
        h = plot_h * count / peak
        x, y = left + i * slot, top + plot_h - h
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.9:.1f}" height="{h:.1f}" fill="#3b6ea8">'
                     f'<title>{edges[i]:g}-{edges[i + 1]:g}: {count}</title></rect>')
    for i in (0, len(counts) // 2, len(counts)):
        parts.append(f'<text x="{left + i * slot:.1f}" y="{height - 10}" font-size="10" text-anchor="middle">'
                     f'{edges[i]:g}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
