"""The default limit on an image's pixels (--max-pixels, checked on the header before
decoding): here, apart from engine/io/images.py, so that `fuse --help` shows it without waiting
for OpenCV and numpy."""
from __future__ import annotations

DEFAULT_MAX_PIXELS = 250_000_000
