"""Side-by-side pictures of exposure stacks (benchmarks/images/exposure-SET.png): the inputs,
the `blend` default, the `exposure` preset, Mertens and enfuse, each labelled with its
MEF-SSIM, Q^AB/F and Q_Y.

    python benchmarks/exposure_figures.py ../shared/benchmarks/mefb/multiexposure/Candle ... -o benchmarks/images
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


MAX_WIDTH = 2400  # pixels: six panels stay legible, and the PNG about 1 MB


def _narrowed(png: bytes) -> bytes:
    import io

    from PIL import Image

    picture = Image.open(io.BytesIO(png))
    if picture.width > MAX_WIDTH:
        picture = picture.resize((MAX_WIDTH, round(picture.height * MAX_WIDTH / picture.width)), Image.LANCZOS)
    out = io.BytesIO()
    picture.save(out, "PNG", optimize=True)
    return out.getvalue()


def main() -> int:
    from semfuse_rt.cache import atomic_write_bytes
    from semfuse_rt.engine.api import fuse
    from semfuse_rt.engine.evaluation.baselines import fuse_baseline
    from semfuse_rt.engine.evaluation.datasets import find_sets
    from semfuse_rt.engine.io.images import load_image
    from semfuse_rt.engine.metrics.mef_ssim import mef_ssim
    from semfuse_rt.engine.metrics.metrics import qabf, qy, to_luma_255
    from semfuse_rt.engine.io.side_by_side import side_by_side_png

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", type=Path, nargs="+", help="folders of one exposure stack each")
    parser.add_argument("-o", "--out", type=Path, required=True, help="folder for exposure-SET.png")
    args = parser.parse_args()
    methods = {"blend (default)": lambda images: fuse(images, "max"),
               "exposure preset": lambda images: fuse(images, "max", preset="exposure"),
               "Mertens (OpenCV)": lambda images: fuse_baseline(images, "mertens"),
               "enfuse": lambda images: fuse_baseline(images, "enfuse")}
    for folder in args.sets:
        (fusion_set,) = [found for found in find_sets(folder.parent).sets if found.name == folder.name]
        images = [load_image(path) for path in fusion_set.sources]
        lumas = [to_luma_255(image) for image in images]
        panels = [(f"input {k + 1}", image) for k, image in enumerate(images)]
        for label, method in methods.items():
            fused = method(images)
            scores = (mef_ssim(images, fused), qabf(lumas, to_luma_255(fused)), qy(lumas, to_luma_255(fused)))
            panels.append((f"{label}: MEF-SSIM {scores[0]:.3f}, Q^AB/F {scores[1]:.3f}, Q_Y {scores[2]:.3f}", fused))
        title = f"MEFB {fusion_set.name}: the exposure preset keeps the stack's global tone and each region's detail"
        atomic_write_bytes(args.out / f"exposure-{fusion_set.name}.png", _narrowed(side_by_side_png(title, panels)))
        print(args.out / f"exposure-{fusion_set.name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
