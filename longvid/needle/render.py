"""Pictures without a drawing library: a 5x7 bitmap font, filled shapes, needle cards, the accuracy
heatmap, and a deterministic PNG writer (zlib, fixed level), all in numpy.

Same inputs give the same bytes on every machine with the same zlib: benchmark files are compared
byte for byte. Never reads fonts or anything else from disk.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

# 5 columns x 7 rows per glyph ('#' = ink); upper-case letters, digits and a little punctuation
_GLYPHS = {
    "A": ".###.|#...#|#...#|#####|#...#|#...#|#...#", "B": "####.|#...#|#...#|####.|#...#|#...#|####.",
    "C": ".###.|#...#|#....|#....|#....|#...#|.###.", "D": "####.|#...#|#...#|#...#|#...#|#...#|####.",
    "E": "#####|#....|#....|####.|#....|#....|#####", "F": "#####|#....|#....|####.|#....|#....|#....",
    "G": ".###.|#...#|#....|#.###|#...#|#...#|.####", "H": "#...#|#...#|#...#|#####|#...#|#...#|#...#",
    "I": ".###.|..#..|..#..|..#..|..#..|..#..|.###.", "J": "..###|...#.|...#.|...#.|...#.|#..#.|.##..",
    "K": "#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#", "L": "#....|#....|#....|#....|#....|#....|#####",
    "M": "#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#", "N": "#...#|#...#|##..#|#.#.#|#..##|#...#|#...#",
    "O": ".###.|#...#|#...#|#...#|#...#|#...#|.###.", "P": "####.|#...#|#...#|####.|#....|#....|#....",
    "Q": ".###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#", "R": "####.|#...#|#...#|####.|#.#..|#..#.|#...#",
    "S": ".####|#....|#....|.###.|....#|....#|####.", "T": "#####|..#..|..#..|..#..|..#..|..#..|..#..",
    "U": "#...#|#...#|#...#|#...#|#...#|#...#|.###.", "V": "#...#|#...#|#...#|#...#|#...#|.#.#.|..#..",
    "W": "#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.", "X": "#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#",
    "Y": "#...#|#...#|.#.#.|..#..|..#..|..#..|..#..", "Z": "#####|....#|...#.|..#..|.#...|#....|#####",
    "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.", "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
    "2": ".###.|#...#|....#|...#.|..#..|.#...|#####", "3": "#####|...#.|..#..|...#.|....#|#...#|.###.",
    "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.", "5": "#####|#....|####.|....#|....#|#...#|.###.",
    "6": "..##.|.#...|#....|####.|#...#|#...#|.###.", "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
    "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.", "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
    " ": ".....|.....|.....|.....|.....|.....|.....", ":": ".....|..#..|..#..|.....|..#..|..#..|.....",
    ">": ".#...|..#..|...#.|....#|...#.|..#..|.#...", "-": ".....|.....|.....|#####|.....|.....|.....",
    ".": ".....|.....|.....|.....|.....|.##..|.##..", "%": "##...|##..#|...#.|..#..|.#...|#..##|...##",
}
GLYPH_W, GLYPH_H = 5, 7

# colour name → RGB; names are what questions and options say
COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 220), "yellow": (240, 210, 20),
    "purple": (140, 40, 180), "orange": (245, 130, 20), "black": (15, 15, 15), "cyan": (20, 200, 210),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")


def text_mask(text: str, scale: int) -> np.ndarray:
    """Boolean ink mask of ``text`` (upper-cased) at ``scale`` pixels per font pixel, 1-pixel gaps."""
    rows = []
    for char in text.upper():
        glyph = _GLYPHS.get(char)
        if glyph is None:
            raise ValueError(f"no glyph for {char!r} (letters, digits, space and ':>-.%' only)")
        bitmap = np.array([[c == "#" for c in row] for row in glyph.split("|")], dtype=bool)
        rows.append(np.pad(bitmap, ((0, 0), (0, 1))))
    mask = np.concatenate(rows, axis=1)[:, :-1] if rows else np.zeros((GLYPH_H, 0), bool)
    return np.kron(mask, np.ones((scale, scale), dtype=bool)).astype(bool)


def draw_text(image: np.ndarray, text: str, centre: tuple[int, int], scale: int, colour) -> None:
    """Ink ``text`` centred at (row, column); clipped to the image."""
    mask = text_mask(text, scale)
    top, left = centre[0] - mask.shape[0] // 2, centre[1] - mask.shape[1] // 2
    r0, c0 = max(0, top), max(0, left)
    r1, c1 = min(image.shape[0], top + mask.shape[0]), min(image.shape[1], left + mask.shape[1])
    if r1 > r0 and c1 > c0:
        image[r0:r1, c0:c1][mask[r0 - top : r1 - top, c0 - left : c1 - left]] = colour


def fit_scale(text: str, width: int, height: int) -> int:
    """The largest integer scale at which ``text`` fits in ``width`` x ``height``."""
    w = len(text) * (GLYPH_W + 1) - 1
    return max(1, min(width // max(1, w), height // GLYPH_H))


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean mask of a filled ``shape`` in a ``size`` x ``size`` box."""
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2.0
    y, x = (yy - c) / (size / 2.0), (xx - c) / (size / 2.0)  # -1..1
    if shape == "circle":
        return x * x + y * y <= 0.9
    if shape == "square":
        return (np.abs(x) <= 0.8) & (np.abs(y) <= 0.8)
    if shape == "triangle":
        return (y <= 0.8) & (y >= -0.85) & (np.abs(x) <= (y + 0.85) / 1.65 * 0.9)
    if shape == "diamond":
        return np.abs(x) + np.abs(y) <= 0.95
    if shape == "cross":
        return ((np.abs(x) <= 0.28) | (np.abs(y) <= 0.28)) & (np.abs(x) <= 0.9) & (np.abs(y) <= 0.9)
    if shape == "ring":
        r = x * x + y * y
        return (r <= 0.9) & (r >= 0.4)
    raise ValueError(f"unknown shape {shape!r}; one of {SHAPES}")


def card(size: int = 224, background=(245, 245, 235)) -> np.ndarray:
    """A blank needle card: a light background inside a black border, so it stands out of any video."""
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = background
    border = max(2, size // 40)
    image[:border], image[-border:], image[:, :border], image[:, -border:] = 0, 0, 0, 0
    return image


def shape_card(shape: str, colour: str, size: int = 224, caption: str = "") -> np.ndarray:
    """A card with a large coloured ``shape`` and an optional caption line under it."""
    image = card(size)
    box = int(size * (0.55 if caption else 0.7))
    top = (size - box) // 2 - (size // 8 if caption else 0)
    left = (size - box) // 2
    image[top : top + box, left : left + box][shape_mask(shape, box)] = COLOURS[colour]
    if caption:
        draw_text(image, caption, (int(size * 0.86), size // 2), fit_scale(caption, int(size * 0.9), size // 8),
                  (0, 0, 0))
    return image


def text_card(lines: list[str], size: int = 224) -> np.ndarray:
    """A card with one to three lines of large black text."""
    image = card(size)
    band = size // (len(lines) + 1)
    for i, line in enumerate(lines):
        scale = fit_scale(line, int(size * 0.85), int(band * 0.8))
        draw_text(image, line, (band * (i + 1), size // 2), scale, (0, 0, 0))
    return image


def chain_card(label: str, next_label: str, shape: str, colour: str, size: int = 224) -> np.ndarray:
    """A multi-hop needle: its own name on top, a coloured shape, and where the chain goes next."""
    image = card(size)
    draw_text(image, label, (size // 7, size // 2), fit_scale(label, int(size * 0.8), size // 6), (0, 0, 0))
    box = int(size * 0.45)
    top, left = (size - box) // 2, (size - box) // 2
    image[top : top + box, left : left + box][shape_mask(shape, box)] = COLOURS[colour]
    footer = f"NEXT: {next_label}" if next_label else "END"
    draw_text(image, footer, (size - size // 7, size // 2), fit_scale(footer, int(size * 0.85), size // 8), (0, 0, 0))
    return image


def heatmap(values: dict[tuple[str, str], float | None], rows: list[str], columns: list[str], title: str,
            row_label: str, column_label: str, cell: int = 48) -> np.ndarray:
    """An accuracy grid: ``values[(row, column)]`` in 0..1 shaded red (0) to green (1), grey when
    missing, the percentage written in each cell, row and column names at the sides."""
    margin_left, margin_top, scale = cell * 2, cell + 16, max(1, cell // 24)
    height = margin_top + cell * len(rows) + cell
    width = margin_left + cell * len(columns) + 8
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    draw_text(image, title, (cell // 3, width // 2), fit_scale(title, width - 8, cell // 3), (0, 0, 0))
    for r, row in enumerate(rows):
        top = margin_top + r * cell
        draw_text(image, row, (top + cell // 2, margin_left // 2), scale, (0, 0, 0))
        for c, column in enumerate(columns):
            left = margin_left + c * cell
            value = values.get((row, column))
            colour = (190, 190, 190) if value is None else (
                int(round(230 * (1 - value) + 20 * value)), int(round(40 * (1 - value) + 180 * value)), 50)
            image[top + 1 : top + cell - 1, left + 1 : left + cell - 1] = colour
            if value is not None:
                draw_text(image, f"{round(100 * value)}", (top + cell // 2, left + cell // 2), scale, (255, 255, 255))
    for c, column in enumerate(columns):
        draw_text(image, column, (margin_top - 10, margin_left + c * cell + cell // 2), scale, (0, 0, 0))
    footer = f"{row_label} BY {column_label}"
    draw_text(image, footer, (height - cell // 2, width // 2), fit_scale(footer, width - 8, cell // 3), (0, 0, 0))
    return image


def png_bytes(image: np.ndarray) -> bytes:
    """An RGB uint8 [H, W, 3] array as PNG bytes (filter 0, zlib level 9: deterministic)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("png_bytes expects an RGB array [H, W, 3]")
    height, width = image.shape[:2]
    raw = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def read_image(path: str) -> np.ndarray:
    """Any picture PyAV (FFmpeg) can decode (PNG, JPEG, WebP, ...) as RGB uint8 [H, W, 3]."""
    import av

    try:
        with av.open(path) as container:
            for frame in container.decode(video=0):
                return frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, OSError) as exc:
        raise ValueError(f"{path}: cannot read the image ({exc})") from exc
    raise ValueError(f"{path}: no picture in the file")
