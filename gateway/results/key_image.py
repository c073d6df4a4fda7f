"""A finding's key image with its graphics and text burned in (Pillow): the pixels of a
Secondary Capture that every viewer shows.

The source slice, windowed to 8 bits, is scaled by a whole factor to a readable size (small
CT slices up, large radiographs down), a black text band is added on top (the anatomy stays
uncovered), and the finding's outline, axes or circle are drawn in its colour. The band
holds "NOT FOR PRIMARY DIAGNOSIS" in white and the finding's label in its colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from gateway.results.viewer_findings import ViewerFinding

NOT_FOR_DIAGNOSIS = "NOT FOR PRIMARY DIAGNOSIS"
WARNING_COLOUR = (255, 255, 255)
_MIN_SIDE = 512
_MAX_SIDE = 2048
_MIN_FONT_PX = 8
_MAX_FONT_PX = 32

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class KeyImage:
    pixels: NDArray[np.uint8]
    """(rows, columns, 3) RGB."""
    scale: tuple[float, float]
    """Output pixels per source pixel, (columns, rows)."""
    band_rows: int
    """Height of the text band above the image."""

    def to_output(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """Source (column, row) coordinates (0 at the top left corner of the top left pixel)
        to the same convention in the key image."""
        out = np.asarray(points, dtype=np.float64) * np.array(self.scale)
        out[:, 1] += self.band_rows
        return out


def _scaled(grey: NDArray[np.uint8]) -> tuple[Image.Image, tuple[float, float]]:
    rows, columns = grey.shape
    longest = max(rows, columns)
    if longest < _MIN_SIDE:
        factor = math.ceil(_MIN_SIDE / longest)
        big = np.repeat(np.repeat(grey, factor, axis=0), factor, axis=1)
        return Image.fromarray(big, mode="L"), (float(factor), float(factor))
    image = Image.fromarray(grey, mode="L")
    if longest <= _MAX_SIDE:
        return image, (1.0, 1.0)
    factor = math.ceil(longest / _MAX_SIDE)
    size = (columns // factor, rows // factor)
    small = image.resize(size, Image.Resampling.BOX)
    return small, (size[0] / columns, size[1] / rows)


def _font(lines: list[str], width: int) -> Font:
    """The largest default font (up to width/40 px) whose widest line fits `width`."""
    size = max(_MIN_FONT_PX, min(_MAX_FONT_PX, width // 40))
    while True:
        font = ImageFont.load_default(size=size)
        widest = max(font.getlength(line) for line in lines)
        if widest <= width or size <= _MIN_FONT_PX:
            return font
        size -= 1


def _line_height(font: Font) -> int:
    return int(font.getbbox("Hg")[3]) + 4


def render_key_image(grey: NDArray[np.uint8], finding: ViewerFinding) -> KeyImage:
    """The key image of `finding` from its key slice's display pixels (rows, columns)."""
    image, scale = _scaled(grey)
    margin = max(4, image.width // 100)
    lines = [NOT_FOR_DIAGNOSIS, finding.label]
    font = _font(lines, image.width - 2 * margin)
    step = _line_height(font)
    band = 2 * margin + step * len(lines)
    canvas = Image.new("RGB", (image.width, image.height + band), (0, 0, 0))
    canvas.paste(image.convert("RGB"), (0, band))
    draw = ImageDraw.Draw(canvas)
    draw.fontmode = "1"  # no anti-aliasing: text in exactly its colour
    for n, (line, colour) in enumerate(zip(lines, (WARNING_COLOUR, finding.colour), strict=True)):
        draw.text((margin, margin + n * step), line, fill=colour, font=font)
    key = KeyImage(np.zeros((0, 0, 3), np.uint8), scale, band)
    width = max(1, round(max(image.width, image.height) / 384))
    graphics = finding.on_key_slice

    def pillow(points: NDArray[np.float64]) -> list[tuple[float, float]]:
        # Pillow addresses a pixel by its index; ours by its top left corner.
        return [(float(x) - 0.5, float(y) - 0.5) for x, y in key.to_output(points)]

    for outline in graphics.outlines:
        draw.line(pillow(outline), fill=finding.colour, width=width, joint="curve")
    for axis in graphics.lines:
        draw.line(pillow(axis), fill=finding.colour, width=width)
    for column, row, radius in graphics.circles:
        (x0, y0), (x1, y1) = pillow(
            np.array([[column - radius, row - radius], [column + radius, row + radius]])
        )
        draw.ellipse((x0, y0, x1, y1), outline=finding.colour, width=width)
    return KeyImage(np.asarray(canvas, dtype=np.uint8), scale, band)
