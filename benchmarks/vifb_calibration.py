"""engine/metrics/vifb_metrics.py against VIFB's own published per-image values: for each metric, the
largest relative error and the largest error in units of the published 5th significant digit
over the 5 calibration pairs x 23 methods, and the time to score one fused image.

    python benchmarks/vifb_calibration.py [--decoder opencv|pillow]

The calibration set is ../shared/benchmarks/vifb-calibration beside the clone, or
$SEMFUSE_RT_BENCHMARKS/vifb-calibration. SwinFusion and YDTR are reported apart: their
published values do not come from the JPEGs shipped.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from semfuse_rt.engine.io.images import load_image
from semfuse_rt.engine.metrics.vifb_metrics import VIFB_METRICS, VifbReference

BENCHMARKS = Path(os.environ.get("SEMFUSE_RT_BENCHMARKS", Path(__file__).resolve().parents[2] / "shared" / "benchmarks"))
FILE_NAMES = {"CE": "Cross_entropy", "EN": "Entropy", "MI": "Mutinf", "PSNR": "Psnr", "SSIM": "Ssim",
              "RMSE": "Rmse", "AG": "Avg_gradient", "EI": "Edge_intensity", "SD": "Variance",
              "SF": "Spatial_frequency", "Qabf": "Qabf", "Qcb": "Qcb", "Qcv": "Qcv"}
NOT_FROM_THESE_JPEGS = {"SwinFusion", "YDTR"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decoder", choices=("opencv", "pillow"), default="opencv",
                        help="JPEG decoder: semfuse-rt's own (OpenCV) or Pillow's")
    args = parser.parse_args()
    root = BENCHMARKS / "vifb-calibration"

    def load(path: Path) -> np.ndarray:
        return load_image(path) if args.decoder == "opencv" else np.asarray(Image.open(path).convert("RGB"))

    pairs = sorted(path.name[:-len("_Vis.jpg")] for path in (root / "infrared_visible").glob("*_Vis.jpg"))
    errors: dict[tuple[str, bool], list[tuple[float, float, str]]] = {}
    seconds = []
    for pair in pairs:
        reference = VifbReference([load(root / "infrared_visible" / f"{pair}_Vis.jpg"),
                                   load(root / "infrared_visible" / f"{pair}_IR.jpg")])
        for fused_path in sorted((root / "fused").glob(f"{pair}_*.jpg")):
            method = fused_path.stem[len(pair) + 1:]
            start = time.perf_counter()
            scores = reference.scores(load(fused_path))
            seconds.append(time.perf_counter() - start)
            for key, _ in VIFB_METRICS:
                text = (root / "published" / f"{pair}_{method}_{FILE_NAMES[key]}.txt").read_text()
                published = float(text.replace(",", " ").split()[0])
                digit = 10.0 ** (math.floor(math.log10(abs(published))) - 4)
                error = abs(scores[key] - published)
                errors.setdefault((key, method in NOT_FROM_THESE_JPEGS), []).append(
                    (error / abs(published), error / digit, f"{pair} {method}"))
    print(f"{len(pairs)} pairs, decoder {args.decoder}")
    print("| metric | max relative error | max error, 5th-digit units | worst | SwinFusion, YDTR: max relative |")
    print("| --- | --- | --- | --- | --- |")
    for key, _ in VIFB_METRICS:
        exact = errors[(key, False)]
        print(f"| {key} | {max(e[0] for e in exact):.1e} | {max(e[1] for e in exact):.3f} | {max(exact)[2]} | "
              f"{max(e[0] for e in errors.get((key, True), [(math.nan,)])):.1e} |")
    print(f"scoring one fused image (13 metrics, 3 channels): median {np.median(seconds):.2f} s")


if __name__ == "__main__":
    main()
