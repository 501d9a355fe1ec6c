"""ThumbHash placeholders: a few dozen bytes that decode to a blurry preview of the image.

The encoder and decoder follow the reference implementation (github.com/evanw/thumbhash,
``js/thumbhash.js``) number for number, rounding as JavaScript's ``Math.round`` does.
The PyPI packages were not used: ``thumbhash`` 0.1.2 encodes alpha wrongly (an operator
precedence slip) and its decoder prints and misindexes, ``thumbhash-python`` 1.0.1 pins
Pillow below 11; both run the DCT as a triple loop in Python. Here it is separable (rows
first), which brings a 100 x 100 image to a few milliseconds.
"""

from __future__ import annotations

import base64
import math
from operator import mul

from PIL import Image

from pixelmill.core.imaging import fit_size

# ThumbHash encodes at most 100 x 100 pixels (more costs time and changes nothing).
PLACEHOLDER_SIDE = 100


def thumbhash_of(image: Image.Image) -> str:
    """The base64 ThumbHash of ``image`` (any size; shrunk to 100 px, alpha kept)."""
    size = fit_size(image.width, image.height, PLACEHOLDER_SIDE, PLACEHOLDER_SIDE)
    small = image.resize(size, Image.Resampling.BOX, reducing_gap=2.0)
    rgba = small if small.mode == "RGBA" else small.convert("RGBA")
    return base64.b64encode(encode_thumbhash(rgba.width, rgba.height, rgba.tobytes())).decode()


def _js_round(value: float) -> int:
    return math.floor(value + 0.5)


def encode_thumbhash(width: int, height: int, rgba: bytes) -> bytes:
    """The ThumbHash of ``width`` x ``height`` RGBA pixels (at most 100 x 100)."""
    if not (0 < width <= PLACEHOLDER_SIDE and 0 < height <= PLACEHOLDER_SIDE):
        raise ValueError(f"{width}x{height} does not fit in 100x100")
    count = width * height
    red, green, blue, alpha = (rgba[k::4] for k in range(4))
    opaque = min(alpha) == 255
    if opaque:
        r = [v / 255 for v in red]
        g = [v / 255 for v in green]
        b = [v / 255 for v in blue]
        a = [1.0] * count
    else:
        a = [v / 255 for v in alpha]
        total = sum(a)
        # Transparent pixels take the average colour of the visible ones.
        r, g, b = (
            _composited(a, channel, sum(map(mul, a, channel)) / 255 / total if total else 0.0)
            for channel in (red, green, blue)
        )
    luma = [(x + y + z) / 3 for x, y, z in zip(r, g, b, strict=True)]
    yellow_blue = [(x + y) / 2 - z for x, y, z in zip(r, g, b, strict=True)]
    red_green = [x - y for x, y in zip(r, g, strict=True)]

    l_limit = 7 if opaque else 5  # fewer luminance terms when alpha needs room
    lx = max(1, _js_round(l_limit * width / max(width, height)))
    ly = max(1, _js_round(l_limit * height / max(width, height)))
    l_dc, l_ac, l_scale = _encode_channel(luma, width, height, max(3, lx), max(3, ly))
    p_dc, p_ac, p_scale = _encode_channel(yellow_blue, width, height, 3, 3)
    q_dc, q_ac, q_scale = _encode_channel(red_green, width, height, 3, 3)

    landscape = width > height
    header24 = (
        _js_round(63 * l_dc)
        | (_js_round(31.5 + 31.5 * p_dc) << 6)
        | (_js_round(31.5 + 31.5 * q_dc) << 12)
        | (_js_round(31 * l_scale) << 18)
        | ((not opaque) << 23)
    )
    header16 = (
        (ly if landscape else lx)
        | (_js_round(63 * p_scale) << 3)
        | (_js_round(63 * q_scale) << 9)
        | (landscape << 15)
    )
    out = [header24 & 255, (header24 >> 8) & 255, header24 >> 16, header16 & 255, header16 >> 8]
    factors = [l_ac, p_ac, q_ac]
    if not opaque:
        a_dc, a_ac, a_scale = _encode_channel(a, width, height, 5, 5)
        out.append(_js_round(15 * a_dc) | (_js_round(15 * a_scale) << 4))
        factors.append(a_ac)
    nibbles = [_js_round(15 * f) for ac in factors for f in ac]
    nibbles += [0] * (len(nibbles) % 2)
    out += [low | (high << 4) for low, high in zip(nibbles[::2], nibbles[1::2], strict=True)]
    return bytes(out)


def _composited(alpha: list[float], channel: bytes, average: float) -> list[float]:
    return [average * (1 - a) + a / 255 * v for a, v in zip(alpha, channel, strict=True)]


def _encode_channel(
    channel: list[float], width: int, height: int, nx: int, ny: int
) -> tuple[float, list[float], float]:
    """DC term, AC terms scaled into 0..1, and their scale (the reference's DCT)."""
    rows = [channel[y * width : (y + 1) * width] for y in range(height)]
    row_sums: dict[int, list[float]] = {}  # cx -> per row, sum over x of pixel * cos term
    dc, ac, scale = 0.0, [], 0.0
    for cy in range(ny):
        fy = [math.cos(math.pi / height * cy * (y + 0.5)) for y in range(height)]
        cx = 0
        while cx * ny < nx * (ny - cy):
            if cx not in row_sums:
                fx = [math.cos(math.pi / width * cx * (x + 0.5)) for x in range(width)]
                row_sums[cx] = [sum(map(mul, row, fx)) for row in rows]
            f = sum(map(mul, row_sums[cx], fy)) / (width * height)
            if cx or cy:
                ac.append(f)
                scale = max(scale, abs(f))
            else:
                dc = f
            cx += 1
    if scale:
        ac = [0.5 + 0.5 / scale * f for f in ac]
    return dc, ac, scale


def thumbhash_aspect_ratio(thumbhash: bytes) -> float:
    """Width / height of the image, as approximately as the hash records it."""
    has_alpha = thumbhash[2] & 0x80
    landscape = thumbhash[4] & 0x80
    lx = (5 if has_alpha else 7) if landscape else thumbhash[3] & 7
    ly = thumbhash[3] & 7 if landscape else (5 if has_alpha else 7)
    return lx / ly


def decode_thumbhash(thumbhash: bytes) -> Image.Image:
    """The RGBA preview a ThumbHash describes, 32 px on its longer side (as a page draws it)."""
    header24 = thumbhash[0] | (thumbhash[1] << 8) | (thumbhash[2] << 16)
    header16 = thumbhash[3] | (thumbhash[4] << 8)
    l_dc = (header24 & 63) / 63
    p_dc = ((header24 >> 6) & 63) / 31.5 - 1
    q_dc = ((header24 >> 12) & 63) / 31.5 - 1
    l_scale = ((header24 >> 18) & 31) / 31
    has_alpha = bool(header24 >> 23)
    p_scale = ((header16 >> 3) & 63) / 63
    q_scale = ((header16 >> 9) & 63) / 63
    landscape = bool(header16 >> 15)
    lx = max(3, (5 if has_alpha else 7) if landscape else header16 & 7)
    ly = max(3, header16 & 7 if landscape else (5 if has_alpha else 7))
    a_dc = (thumbhash[5] & 15) / 15 if has_alpha else 1.0
    a_scale = (thumbhash[5] >> 4) / 15 if has_alpha else 0.0
    nibbles = [n for byte in thumbhash[6 if has_alpha else 5 :] for n in (byte & 15, byte >> 4)]
    position = 0

    def terms(nx: int, ny: int, scale: float) -> list[tuple[int, int, float]]:
        nonlocal position
        found = []
        for cy in range(ny):
            cx = 0 if cy else 1
            while cx * ny < nx * (ny - cy):
                found.append((cx, cy, (nibbles[position] / 7.5 - 1) * scale))
                position += 1
                cx += 1
        return found

    l_ac = terms(lx, ly, l_scale)
    p_ac = terms(3, 3, p_scale * 1.25)  # the reference boosts saturation after quantising
    q_ac = terms(3, 3, q_scale * 1.25)
    a_ac = terms(5, 5, a_scale) if has_alpha else []
    ratio = thumbhash_aspect_ratio(thumbhash)
    width = _js_round(32 if ratio > 1 else 32 * ratio)
    height = _js_round(32 / ratio if ratio > 1 else 32)
    pixels = bytearray()
    for y in range(height):
        fy = [math.cos(math.pi / height * (y + 0.5) * cy) for cy in range(7)]
        for x in range(width):
            fx = [math.cos(math.pi / width * (x + 0.5) * cx) for cx in range(7)]
            lum = l_dc + sum(v * fx[cx] * fy[cy] * 2 for cx, cy, v in l_ac)
            p = p_dc + sum(v * fx[cx] * fy[cy] * 2 for cx, cy, v in p_ac)
            q = q_dc + sum(v * fx[cx] * fy[cy] * 2 for cx, cy, v in q_ac)
            a = a_dc + sum(v * fx[cx] * fy[cy] * 2 for cx, cy, v in a_ac)
            b = lum - 2 / 3 * p
            r = (3 * lum - b + q) / 2
            g = r - q
            pixels += bytes(int(max(0.0, 255 * min(1.0, c))) for c in (r, g, b, a))
    return Image.frombytes("RGBA", (width, height), bytes(pixels))
