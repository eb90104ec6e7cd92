"""Classical fusion baselines for K >= 2 registered images: average, DWT and DT-CWT choose-max
(and, through engine/evaluation/exposure_baselines.py, Mertens exposure fusion and enfuse).

They exist so that every quality number semfuse-rt reports has reference points computed in
the same process, on the same pixels, with the same metric code.

Colour follows docs/method.md's "Inputs": grey sets fuse as one plane and stay grey; all-colour
sets fuse each RGB channel separately; mixed grey + colour sets fuse luma (Y of full-range
BT.601 YCbCr) and keep the colour inputs' chroma. The result has the deepest input's bit
depth. Options a rule does not know are user errors (SemfuseError).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from semfuse_rt.errors import SemfuseError
from semfuse_rt.engine.io.sources import finish, prepare

__all__ = ["BASELINES", "is_baseline", "fuse_baseline",
           "average_planes", "dwt_choose_max", "dtcwt_choose_max"]

# Fusion of K float planes of one shape into one plane, with rule-specific keyword options.
PlaneRule = Callable[..., np.ndarray]


def average_planes(planes: Sequence[np.ndarray]) -> np.ndarray:
    """Pixel-wise mean of the sources."""
    return np.mean(planes, axis=0)


def _choose_max(bands: Sequence[np.ndarray]) -> np.ndarray:
    """Per coefficient, the source coefficient of largest magnitude (ties: lowest k).

    Large transform coefficients mark sharp, high-contrast detail; the classic
    choose-max rule of multiresolution fusion (H. Li, B. S. Manjunath and S. K. Mitra,
    "Multisensor image fusion using the wavelet transform", Graphical Models and Image
    Processing 57(3), 1995).
    """
    stack = np.stack(bands)
    chosen = np.argmax(np.abs(stack), axis=0)
    return np.take_along_axis(stack, chosen[None], axis=0)[0]


def dwt_choose_max(planes: Sequence[np.ndarray], *, wavelet: str = "db2", levels: int = 4,
                   mode: str = "symmetric") -> np.ndarray:
    """Separable DWT (PyWavelets): choose-max on every detail band, mean of the approximation.

    Defaults: Daubechies-2, 4 levels (fewer when the image is too small for 4), symmetric
    extension; the reconstruction is cropped back to the input size.
    """
    import pywt

    try:
        wavelet_object = pywt.Wavelet(wavelet)
    except ValueError:
        raise SemfuseError(f"dwt: unknown wavelet {wavelet!r} (see pywt.wavelist())") from None
    if mode not in pywt.Modes.modes:
        raise SemfuseError(f"dwt: unknown extension mode {mode!r}; one of {', '.join(pywt.Modes.modes)}")
    height, width = planes[0].shape
    usable = min(int(levels), pywt.dwt_max_level(min(height, width), wavelet_object.dec_len))
    if usable < 1:
        return average_planes(planes)
    decompositions = [pywt.wavedec2(plane, wavelet_object, mode=mode, level=usable) for plane in planes]
    fused = [np.mean([d[0] for d in decompositions], axis=0)]
    for level in range(1, usable + 1):
        fused.append(tuple(
            _choose_max([d[level][band] for d in decompositions]) for band in range(3)
        ))
    return pywt.waverec2(fused, wavelet_object, mode=mode)[:height, :width]


def dtcwt_choose_max(planes: Sequence[np.ndarray], *, levels: int = 4,
                     biort: str = "near_sym_a", qshift: str = "qshift_a", verify: int = 0) -> np.ndarray:
    """Dual-tree complex wavelet transform choose-max, with the project's DT-CWT
    (export/graphs/dtcwt_graph.py, the start images' too), in float64.

    N. G. Kingsbury, "Complex wavelets for shift invariant analysis and filtering of
    signals", ACHA 10(3), 2001; as a fusion rule: J. J. Lewis et al., "Pixel- and region-based
    image fusion with complex wavelets", Information Fusion 8(2), 2007. Choose-max by complex
    magnitude in each of the six orientations at every level, mean of the lowpass; 4 levels,
    near_sym_a / qshift_a filters (the `dtcwt` package's defaults), as in the prototype of
    docs/quality-notes.md. `verify` > 0: the choices are majority-filtered over that odd
    window first (consistency verification, Li, Manjunath and Mitra): an isolated
    coefficient from another source, usually noise or a ringing lobe, follows its neighbours.
    """
    import torch

    from semfuse_rt.export.graphs.dtcwt_graph import choose_max_planes

    def plane(k: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(planes[k], dtype=np.float64))[None]

    try:
        fused = choose_max_planes(len(planes), plane, int(verify), levels=int(levels), biort=biort, qshift=qshift)
    except ValueError as error:
        raise SemfuseError(f"dtcwt: {error}") from None
    return fused[0].numpy()


BASELINES: dict[str, PlaneRule] = {
    "average": average_planes,
    "dwt": dwt_choose_max,
    "dtcwt": dtcwt_choose_max,
}


def is_baseline(method: str) -> bool:
    from semfuse_rt.engine.evaluation.exposure_baselines import IMAGE_BASELINES

    return method in BASELINES or method in IMAGE_BASELINES


# --------------------------------------------------------------------------- colour handling

def fuse_baseline(images: Sequence[np.ndarray], method: str, **options) -> np.ndarray:
    """Fuse K >= 2 images with baseline `method` ("average", "dwt", "dtcwt", "mertens", "enfuse").

    Inputs are prepared and the result finished by the same code as semfuse's own methods
    (engine/io/sources.py), so modes, chroma and bit depth are handled identically.
    """
    from semfuse_rt.engine.evaluation.exposure_baselines import IMAGE_BASELINES

    if method in IMAGE_BASELINES:
        try:
            return IMAGE_BASELINES[method](images, **options)
        except TypeError as error:
            raise SemfuseError(f"{method}: {error}") from None
    if method not in BASELINES:
        raise SemfuseError(f"unknown baseline {method!r}; use one of {', '.join([*BASELINES, *IMAGE_BASELINES])}")
    rule = BASELINES[method]
    sources = prepare(images)
    pixels = sources.pixels.astype(np.float64)  # (K, 3, H, W), 0..255
    # Grey and mixed sets carry one plane replicated three times: fuse it once.
    channels = 3 if sources.mode == "colour" else 1
    try:
        fused = [rule(list(pixels[:, channel]), **options) for channel in range(channels)]
    except TypeError as error:
        # Unknown keyword options are a mistake in the user's variant spec, not a bug.
        raise SemfuseError(f"{method}: {error}") from None
    return finish(np.stack(fused * (3 // channels)), sources)
