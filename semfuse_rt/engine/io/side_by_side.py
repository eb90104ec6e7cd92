"""One picture per image set: its inputs and each method's result in one row, each under its
label, large enough to judge a fusion by eye (up to VIEW pixels a side, never enlarged)."""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

VIEW = 640  # longest side of a panel, pixels: the usual test images (up to 640 x 480) show pixel for pixel
_MIN_LABEL_WIDTH = 160  # tiny images keep a label column wide enough to read
_MARGIN, _GAP, _LABEL_SIZE, _TITLE_SIZE = 8, 8, 14, 16


def _wrapped(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """`text` in lines no wider than `width` pixels, broken between characters where it must:
    a label is never cut short."""
    lines, line = [], ""
    for character in text:
        if line and font.getlength(line + character) > width:
            lines.append(line)
            line = character
        else:
            line += character
    return lines + [line]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def side_by_side_png(title: str, panels: Sequence[tuple[str, np.ndarray]]) -> bytes:
    """PNG bytes: `title` above one row of (label, 8-bit RGB image) panels, each image centred
    in a cell as large as the largest."""
    label_font, title_font = _font(_LABEL_SIZE), _font(_TITLE_SIZE)
    cell_width = max(_MIN_LABEL_WIDTH, *(image.shape[1] for _, image in panels))
    cell_height = max(image.shape[0] for _, image in panels)
    width = 2 * _MARGIN + len(panels) * cell_width + (len(panels) - 1) * _GAP
    title_lines = _wrapped(title, title_font, width - 2 * _MARGIN)
    labels = [_wrapped(label, label_font, cell_width) for label, _ in panels]
    title_height = len(title_lines) * (_TITLE_SIZE + 4) + _GAP
    label_height = max(len(lines) for lines in labels) * (_LABEL_SIZE + 3) + 4
    height = 2 * _MARGIN + title_height + label_height + cell_height
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for row, line in enumerate(title_lines):
        draw.text((_MARGIN, _MARGIN + row * (_TITLE_SIZE + 4)), line, fill="black", font=title_font)
    top = _MARGIN + title_height
    for column, ((_, image), lines) in enumerate(zip(panels, labels)):
        left = _MARGIN + column * (cell_width + _GAP)
        for row, line in enumerate(lines):
            draw.text((left, top + row * (_LABEL_SIZE + 3)), line, fill="black", font=label_font)
        offset = ((cell_width - image.shape[1]) // 2, (cell_height - image.shape[0]) // 2)
        canvas.paste(Image.fromarray(image), (left + offset[0], top + label_height + offset[1]))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()
