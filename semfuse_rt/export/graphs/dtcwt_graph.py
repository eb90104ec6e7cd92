"""The project's one DT-CWT: the transform and its choose-max fusion as torch ops, and as an
ONNX graph. The start images (engine/start/initialisation.py), the `dtcwt` baseline
(engine/evaluation/baselines.py) and the ONNX Runtime backend's start graph all run it.

Torch ops on batched planes, so that it runs on the GPU beside the optimisation and exports
to ONNX (no complex type there: a highpass is a pair of real tensors, real and imaginary
parts).

`DtcwtTransform` is the `dtcwt` package's (0.14) `Transform2d(biort="near_sym_a",
qshift="qshift_a")` with 4 levels (the package needs numpy < 2: the project no longer
depends on it, and the tests compare with its recorded outputs, tests/data/make_dtcwt_oracle.py).
The filters are the package's (the table below), the extensions are its own (symmetric with
the end sample repeated, `dtcwt.utils.reflect`; an odd-sized image gets its last row/column
repeated; a level whose lowpass has a row or column count not divisible by 4 gets one
edge-replicated row/column on either side, and the inverse crops it again), and the six
orientations are in its order (its
`Pyramid.highpasses[l][:, :, o]` is `real[:, o] + 1j * imag[:, o]` here). Its filtering
(colfilter, coldfilt, colifilt) is strided correlation with polyphase kernels, several
filters at once as output channels: convolutions when traced for ONNX or on a GPU, sums of
shifted strided slices in eager mode on the CPU (several times faster there, in float64
above all). All size-dependent indexing is computed from the tensors' shapes with tensor
ops (Range, Mod, Gather), so the exported graph has dynamic K, H and W, one file per window.

`DtcwtChooseMax` is the fusion rule: lowpass = mean of the K inputs, every highpass
coefficient from the input of largest complex magnitude (ties to the lowest k), optionally
majority-filtered (consistency verification) over a `verify` x `verify` window per
orientation and level, with the tie rule of docs/method.md (the window is clipped at the
borders; a tie keeps the centre's label if it is among the tied, else the lowest).
`StreamedDtcwtChooseMax` makes the same choices transforming one input at a time;
`choose_max_planes` runs whichever of the two suits K. `dtcwt_start` is
engine/start/initialisation.py's "dtcwt" / "dtcwt-verified" start image.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DtcwtTransform", "DtcwtChooseMax", "StreamedDtcwtChooseMax", "DtcwtStartGraph", "choose_max_planes",
           "dtcwt_start", "graph_suits", "dtcwt_filters", "dtcwt_graph_name", "export_dtcwt_graph", "LEVELS",
           "BIORT", "QSHIFT", "BIORTS", "QSHIFTS"]

LEVELS = 4
BIORT = "near_sym_a"
QSHIFT = "qshift_a"

# Orientation o of a level comes from band BAND[o] (0: highpass down the columns and lowpass
# along the rows, the package's "horizontal pair"; 1: "vertical"; 2: "diagonal") and from
# the first (p - q) or second (p + q) complex subimage of q2c. Stacking q2c's outputs as
# (first of bands 0, 1, 2, second of bands 0, 1, 2), this picks the orientations in order.
_ORIENTATIONS = (0, 2, 1, 4, 5, 3)
# c2q pairs the orientations back per band: band 0 from (0, 5), 1 from (2, 3), 2 from (1, 4).
_BAND_PAIRS = ((0, 5), (2, 3), (1, 4))
_SQRT_HALF = math.sqrt(0.5)


# --------------------------------------------------------------------------- filters
# N. G. Kingsbury's filters as the `dtcwt` package (0.14, BSD licence) ships them, to the last
# bit, for the sets this transform handles (its near_sym_b_bp and qshift_b_bp use more filters
# than these). The rest of each set follows from these by reversal and alternating signs,
# exactly (tests/test_dtcwt_graph.py compares every filter with the package's).
# Level 1 ("biort"): (h0o, h1o).
_BIORT = {
    "antonini": ((
        0.026748757410810106, -0.01686411844287467, -0.07822326652899052, 0.2668641184428729, 0.6029490182363593,
        0.2668641184428769, -0.0782232665289884, -0.016864118442875293, 0.026748757410809648,
    ), (
        0.04563588155712514, -0.02877176311424934, -0.295635881557128, 0.5575435262285023, -0.29563588155712334,
        -0.02877176311425308, 0.04563588155712608,
    )),
    "legall": ((
        -0.125, 0.25, 0.75, 0.25, -0.125,
    ), (
        -0.25, 0.5, -0.25,
    )),
    "near_sym_a": ((
        -0.05, 0.25, 0.6, 0.25, -0.05,
    ), (
        0.010714285714285713, -0.05357142857142857, -0.26071428571428573, 0.6071428571428571, -0.26071428571428573,
        -0.05357142857142857, 0.010714285714285713,
    )),
    "near_sym_b": ((
        -0.0017578125, 0.0, 0.022265625, -0.046875, -0.0482421875, 0.296875, 0.55546875, 0.296875, -0.0482421875,
        -0.046875, 0.022265625, 0.0, -0.0017578125,
    ), (
        -7.062639508928571e-05, 0.0, 0.0013419015066964285, -0.0018833705357142855, -0.007156808035714285,
        0.023856026785714284, 0.05564313616071428, -0.05168805803571428, -0.29975760323660716, 0.5594308035714286,
        -0.29975760323660716, -0.05168805803571428, 0.05564313616071428, 0.023856026785714284, -0.007156808035714285,
        -0.0018833705357142855, 0.0013419015066964285, 0.0, -7.062639508928571e-05,
    )),
}
# Levels 2+ ("qshift"): h0a.
_QSHIFT = {
    "qshift_06": (
        0.03516383657149474, 0.0, -0.08832942445107285, 0.23389032060723564, 0.7602723690661257, 0.5875182977235605,
        0.0, -0.11430183714424873, 0.0, 0.0,
    ),
    "qshift_a": (
        0.051130405283831656, -0.013975370246888838, -0.10983605166597087, 0.26383956105893763, 0.7666284677930372,
        0.5636557101270515, 0.0008736226952170968, -0.1002312195074762, -0.0016896812725281543,
        -0.006181881892116438,
    ),
    "qshift_b": (
        0.003253142763653182, -0.00388321199915849, 0.03466034684485349, -0.03887280126882779, -0.11720388769911527,
        0.27529538466888204, 0.7561456438925225, 0.5688104207121227, 0.011866092033797, -0.1067118046866654,
        0.023825384794920298, 0.01702522388155399, -0.005439475937274115, -0.004556895628475491,
    ),
    "qshift_c": (
        -0.0047616119384559135, -0.00044602278926228516, -7.144197327965012e-05, 0.034914612306842195,
        -0.03727389579989796, -0.11591145742744076, 0.2763686431330317, 0.7563937651990367, 0.567134484100133,
        0.01463740596447335, -0.11255888425752203, 0.02228926326692271, 0.018498682724156248, -0.0072026778782583465,
        -0.0002276522058977718, 0.002430349945148675,
    ),
    "qshift_d": (
        -0.002284127440270531, 0.0012098941630734423, -0.011834794515430786, 0.0012834569993443994,
        0.044365221606616996, -0.05327610880304726, -0.1133058863621428, 0.2809028632221865, 0.7528160380878561,
        0.5658080673964587, 0.024550152433666563, -0.12018854471079482, 0.018156493945546453, 0.03152637712208465,
        -0.006628794612430063, -0.0025761743066007948, 0.0012775586538069982, 0.002411869456666278,
    ),
}
BIORTS = tuple(_BIORT)
QSHIFTS = tuple(_QSHIFT)


def _alternating(h: np.ndarray, first: float) -> np.ndarray:
    """h with its signs alternating, h[0] times `first` (+1 or -1): exact."""
    signs = np.where(np.arange(h.size) % 2 == 0, first, -first)
    return h * signs


def dtcwt_filters(biort: str, qshift: str) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """(h0o, g0o, h1o, g1o) and (h0a, h0b, g0a, g0b, h1a, h1b, g1a, g1b), float64, as the
    package's `dtcwt.coeffs.biort(biort)` and `qshift(qshift)[:8]` return them (flattened)."""
    if biort not in _BIORT:
        raise ValueError(f"unknown level-1 filters biort={biort!r}; one of {', '.join(BIORTS)}")
    if qshift not in _QSHIFT:
        raise ValueError(f"unknown q-shift filters qshift={qshift!r}; one of {', '.join(QSHIFTS)}")
    h0o, h1o = (np.array(h, dtype=np.float64) for h in _BIORT[biort])
    g0o, g1o = _alternating(h1o, -1.0), _alternating(h0o, 1.0)
    h0a = np.array(_QSHIFT[qshift], dtype=np.float64)
    h0b = h0a[::-1].copy()
    h1a, h1b = _alternating(h0b, 1.0), _alternating(h0a, -1.0)
    return (h0o, g0o, h1o, g1o), (h0a, h0b, h0b.copy(), h0a.copy(), h1a, h1b, h1a[::-1].copy(), h1b[::-1].copy())


# --------------------------------------------------------------------------- size-dependent indices
# `n` is a Python int in eager mode and a 0-dim int64 tensor while the ONNX exporter traces, so
# these indices stay functions of the input's shape in the graph.

def _symmetric_index(n, before: int, after: int, device) -> torch.Tensor:
    """dtcwt.utils.reflect(arange(-before, n + after), -0.5, n - 0.5): symmetric extension of
    n samples with the end samples repeated, any number of times over."""
    i = torch.arange(-before, n + after, device=device)
    j = torch.remainder(i, 2 * n)
    return torch.where(j < n, j, 2 * n - 1 - j)


def _level_pad(n):
    """The rows (or columns) the package adds on either side of a level-2+ lowpass of n (even)
    rows: one when n is not a multiple of 4."""
    return (n % 4) // 2


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _use_taps(x: torch.Tensor) -> bool:
    """Filter by sums of shifted slices (eager, CPU) rather than by convolutions (traced for
    ONNX, or on a GPU): on the CPU, convolutions of planes with one or two channels, and
    float64 ones above all, are several times slower. Writing into slices of an output records
    no gradients: where they are needed, the convolutions."""
    return not _tracing() and x.device.type == "cpu" and not (x.requires_grad and torch.is_grad_enabled())


def _correlate(x: torch.Tensor, dim: int, weight: torch.Tensor, taps: list, stride: int,
               phases: int) -> torch.Tensor:
    """Correlate along `dim` (2 or 3) of x (N, G * Cin, H, W), each of its G groups of Cin
    channels alike, with weight (Cout, Cin, k) (taps: its nonzero (cin, t, w) per output
    channel), with `stride`; the Cout outputs of a group are Cout / phases channels of
    `phases` interleaved phases each: -> (N, G * Cout / phases, ...)."""
    cout, cin, k = weight.shape
    n, channels = x.shape[0], x.shape[1]
    groups = channels // cin
    if _use_taps(x):
        length = (x.shape[dim] - k) // stride + 1
        shape = [n, groups * cout // phases, x.shape[2], x.shape[3]]
        shape[dim] = length * phases
        out = x.new_empty(shape)
        for g in range(groups):
            for co, terms in enumerate(taps):
                target = out[:, g * (cout // phases) + co // phases]
                target = target.narrow(dim - 1, co % phases, length * phases - phases + 1)
                target = target[:, ::phases] if dim == 2 else target[:, :, ::phases]
                first = True
                for ci, t, w in terms:
                    source = x[:, g * cin + ci].narrow(dim - 1, t, stride * (length - 1) + 1)
                    source = source[:, ::stride] if dim == 2 else source[:, :, ::stride]
                    if first:
                        torch.mul(source, w, out=target)
                        first = False
                    else:
                        target.add_(source, alpha=w)
        return out
    height, width = x.shape[2], x.shape[3]
    kernel = weight.to(dtype=x.dtype, device=x.device)
    kernel = kernel.unsqueeze(-1) if dim == 2 else kernel.unsqueeze(-2)
    y = F.conv2d(x.reshape(n * groups, cin, height, width), kernel,
                 stride=(stride, 1) if dim == 2 else (1, stride))
    # (N G, Cout, ...) -> (N, G * Cout / phases, ...), phase p of sample j at phases * j + p.
    outer = groups * cout // phases
    y = y.reshape(n, outer, phases, y.shape[2], y.shape[3])
    if dim == 2:
        return y.permute(0, 1, 3, 2, 4).reshape(n, outer, y.shape[3] * phases, y.shape[4])
    return y.permute(0, 1, 3, 4, 2).reshape(n, outer, y.shape[3], y.shape[4] * phases)


def _argmax0(x: torch.Tensor) -> torch.Tensor:
    """argmax over dim 0 (keepdim), the first maximum; torch.max's indices are the same and
    on the CPU far faster than torch.argmax over a leading dim."""
    if _tracing():
        return torch.argmax(x, dim=0, keepdim=True)
    return torch.max(x, dim=0, keepdim=True).indices


def _crop(x: torch.Tensor, dim: int, start, length) -> torch.Tensor:
    index = torch.arange(length, device=x.device) + start
    return x.index_select(dim, index)


# --------------------------------------------------------------------------- filter kernels

def _centred(h: np.ndarray, length: int) -> np.ndarray:
    """An odd filter zero-padded on both sides to `length` (odd): the same colfilter."""
    pad = (length - h.size) // 2
    return np.pad(h, (pad, pad))


def _decimation_kernels(ha: np.ndarray, hb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lowlevel.coldfilt(X, ha, hb) as one stride-4 correlation over E[2:] (E: X extended by
    m = len(ha) symmetric samples on either side) with two output channels, the even and the
    odd output samples: Ya[j] = sum_u E[4j+2+2u] ha[m-1-u], Yb[j] = sum_u E[4j+3+2u] hb[m-1-u]."""
    m = ha.size
    wa = np.zeros(2 * m)
    wb = np.zeros(2 * m)
    wa[0::2] = ha[::-1]
    wb[1::2] = hb[::-1]
    return (wa, wb) if np.sum(ha * hb) > 0 else (wb, wa)


def _interpolation_phases(ha: np.ndarray, hb: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """lowlevel.colifilt(X, ha, hb): output sample 4j + p is sum_t E[o_p + 2j + 2t] f_p[m2-1-t]
    (E: X extended by m2 = m/2 symmetric samples on either side); the four (o_p, f_p)."""
    m = ha.size
    m2 = m // 2
    positive = np.sum(ha * hb) > 0
    if m2 % 2 == 0:
        ta, tb = (3, 2) if positive else (2, 3)
        return [(tb - 2, ha[1::2]), (ta - 2, hb[1::2]), (tb, ha[0::2]), (ta, hb[0::2])]
    ta, tb = (2, 1) if positive else (1, 2)
    return [(tb, ha[0::2]), (ta, hb[0::2]), (tb, ha[1::2]), (ta, hb[1::2])]


def _interpolation_kernels(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, list[np.ndarray]]:
    """Stride-2 correlation kernels, per pair the four output phases, over E[base:]."""
    phases = [_interpolation_phases(ha, hb) for ha, hb in pairs]
    base = min(o for pair in phases for o, _ in pair)
    length = max(o - base + 2 * (f.size - 1) + 1 for pair in phases for o, f in pair)
    kernels = []
    for pair in phases:
        for o, f in pair:
            w = np.zeros(length)
            w[o - base::2][:f.size] = f[::-1]
            kernels.append(w)
    m2 = pairs[0][0].size // 2
    for r in (4, 8, 12, 20):  # the output is exactly r / 2 samples per phase
        if (r + 2 * m2 - base - length) // 2 + 1 != r // 2:
            raise NotImplementedError("these q-shift filters do not fit the interpolation kernels")
    return base, kernels


# --------------------------------------------------------------------------- the transform

class DtcwtTransform(nn.Module):
    """The 2-D DT-CWT of `dtcwt.Transform2d(biort, qshift)` on batched planes (N, H, W).

    `forward` returns (lowpass (N, h, w), [(real, imag) (N, 6, h_l, w_l) per level]);
    `inverse` takes the same and returns (N, H', W'), H' and W' the sizes the package's
    inverse returns (H and W rounded up to even)."""

    def __init__(self, levels: int = LEVELS, biort: str = BIORT, qshift: str = QSHIFT):
        super().__init__()
        if levels < 1:
            raise ValueError(f"the DT-CWT needs at least one level, got {levels}")
        self.levels = int(levels)
        (h0o, g0o, h1o, g1o), (h0a, h0b, g0a, g0b, h1a, h1b, g1a, g1b) = dtcwt_filters(biort, qshift)
        if any(h.size % 2 == 0 for h in (h0o, g0o, h1o, g1o)):
            raise NotImplementedError("level-1 filters of even length")
        if len({h.size for h in (h0a, h0b, g0a, g0b, h1a, h1b, g1a, g1b)}) != 1 or h0a.size % 2:
            raise NotImplementedError("q-shift filters of unequal or odd lengths")

        # Level 1, analysis: colfilter with h0o and h1o (two output channels), one length.
        n1 = max(h0o.size, h1o.size)
        self.level1_half = n1 // 2
        self._taps: dict[str, list] = {}
        self._register("level1_analysis", np.array([[_centred(h0o, n1)[::-1]], [_centred(h1o, n1)[::-1]]]))
        # Level 1, synthesis: y = colfilter(low, g0o) + colfilter(high, g1o), the sum being
        # the convolution's sum over its two input channels.
        s1 = max(g0o.size, g1o.size)
        self.level1_synthesis_half = s1 // 2
        self._register("level1_synthesis", np.array([[_centred(g0o, s1)[::-1], _centred(g1o, s1)[::-1]]]))

        # Levels 2+, analysis: coldfilt(X, h0b, h0a) and coldfilt(X, h1b, h1a), two channels
        # (even, odd outputs) each.
        self.qshift_length = h0a.size
        analysis = np.array([*_decimation_kernels(h0b, h0a), *_decimation_kernels(h1b, h1a)])
        self._register("analysis", analysis[:, None])
        # Levels 2+, synthesis: colifilt(low, g0b, g0a) + colifilt(high, g1b, g1a), four
        # output phases.
        base, kernels = _interpolation_kernels([(g0b, g0a), (g1b, g1a)])
        self.synthesis_base = base
        self._register("synthesis", np.array([[kernels[p], kernels[4 + p]] for p in range(4)]))

    def _filter(self, x: torch.Tensor, dim: int, name: str, stride: int = 1, phases: int = 1) -> torch.Tensor:
        return _correlate(x, dim, getattr(self, name), self._taps[name], stride, phases)

    def _register(self, name: str, weight: np.ndarray) -> None:
        """A kernel (Cout, Cin, k): a buffer for the convolutions, its taps for the slices."""
        weight = np.ascontiguousarray(weight, dtype=np.float64)
        self.register_buffer(name, torch.from_numpy(weight))
        self._taps[name] = [[(ci, t, float(weight[co, ci, t])) for ci in range(weight.shape[1])
                             for t in range(weight.shape[2]) if weight[co, ci, t] != 0]
                            for co in range(weight.shape[0])]

    def _level1_analysis(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """(N, C, ...) -> (N, 2C, ...): per plane, colfilter with h0o and with h1o, after the
        package's repeat of the last row/column of an odd size."""
        size = x.shape[dim]
        half = self.level1_half
        index = torch.clamp(_symmetric_index(size + size % 2, half, half, x.device), max=size - 1)
        return self._filter(x.index_select(dim, index), dim, "level1_analysis")

    def _analysis(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """(N, C, ...) -> (N, 2C, ...) of half the size along dim: per plane, coldfilt with
        (h0b, h0a) and with (h1b, h1a), after the package's extension to a multiple of 4."""
        size = x.shape[dim]
        pad = _level_pad(size)
        m = self.qshift_length
        index = torch.clamp(_symmetric_index(size + 2 * pad, m - 2, m, x.device) - pad, 0, size - 1)
        return self._filter(x.index_select(dim, index), dim, "analysis", 4, 2)

    @staticmethod
    def _q2c(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, 2h, 2w) bands -> real, imag (N, 6, h, w) in the package's orientation order."""
        a = y[:, :, 0::2, 0::2]
        b = y[:, :, 0::2, 1::2]
        c = y[:, :, 1::2, 0::2]
        d = y[:, :, 1::2, 1::2]
        order = torch.tensor(_ORIENTATIONS, device=y.device)
        # p = (a + jb) / sqrt 2, q = (d - jc) / sqrt 2; the subimages are p - q and p + q.
        real = torch.cat([a - d, a + d], 1).index_select(1, order) * _SQRT_HALF
        imag = torch.cat([b + c, b - c], 1).index_select(1, order) * _SQRT_HALF
        return real, imag

    @staticmethod
    def _c2q(real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        """real, imag (N, 6, h, w) -> the three bands (N, 3, 2h, 2w) as quads."""
        first = torch.tensor([pair[0] for pair in _BAND_PAIRS], device=real.device)
        second = torch.tensor([pair[1] for pair in _BAND_PAIRS], device=real.device)
        r0, r1 = real.index_select(1, first), real.index_select(1, second)
        i0, i1 = imag.index_select(1, first), imag.index_select(1, second)
        # P = (w0 + w1) / sqrt 2, Q = (w0 - w1) / sqrt 2; quads (Re P, Im P; Im Q, -Re Q).
        top = torch.stack([r0 + r1, i0 + i1], -1)
        bottom = torch.stack([i0 - i1, r1 - r0], -1)
        quads = torch.stack([top, bottom], 3) * _SQRT_HALF  # (N, 3, h, 2, w, 2)
        n, bands, h, _, w, _ = quads.shape
        return quads.reshape(n, bands, h * 2, w * 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        x = x.unsqueeze(1)  # (N, 1, H, W)
        # (N, 2, ...) [lo, hi] down the columns, then (N, 4, ...) [lo lo, lo hi, hi lo, hi hi]
        # with the second filter along the rows; the highpass bands in the package's order
        # are hi lo, lo hi, hi hi.
        highpass = torch.tensor([2, 1, 3], device=x.device)
        bands = self._level1_analysis(self._level1_analysis(x, 2), 3)
        highpasses = [self._q2c(bands.index_select(1, highpass))]
        for _ in range(1, self.levels):
            bands = self._analysis(self._analysis(bands[:, :1], 2), 3)
            highpasses.append(self._q2c(bands.index_select(1, highpass)))
        return bands[:, 0], highpasses

    # -- synthesis

    def _level1_synthesis(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """(N, 2G, ...) pairs (low, high) -> (N, G, ...): colfilter(low, g0o) + colfilter(high, g1o)."""
        half = self.level1_synthesis_half
        return self._filter(x.index_select(dim, _symmetric_index(x.shape[dim], half, half, x.device)), dim,
                            "level1_synthesis")

    def _synthesis(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """(N, 2G, ...) pairs (low, high) -> (N, G, ...) of twice the size along dim:
        colifilt(low, g0b, g0a) + colifilt(high, g1b, g1a)."""
        half = self.qshift_length // 2
        index = _symmetric_index(x.shape[dim], half - self.synthesis_base, half, x.device)
        return self._filter(x.index_select(dim, index), dim, "synthesis", 2, 4)

    def inverse(self, lowpass: torch.Tensor,
                highpasses: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Pyramid -> planes; the sizes of the levels are taken from the highpasses, as the
        package's inverse does."""
        z = lowpass.unsqueeze(1)
        for level in range(len(highpasses) - 1, -1, -1):
            bands = self._c2q(*highpasses[level])  # (N, 3, ...) [hi lo, lo hi, hi hi]
            # Down the columns: y1 from (z, band 0), y2 from (band 1, band 2); then along the
            # rows from (y1, y2).
            pairs = torch.cat([z, bands], 1)
            if level == 0:
                z = self._level1_synthesis(self._level1_synthesis(pairs, 2), 3)
                continue
            z = self._synthesis(self._synthesis(pairs, 2), 3)
            # The forward pass extended this level's input to a multiple of 4: crop it back
            # to twice the size of the next finer highpasses.
            below = highpasses[level - 1][0]
            for dim in (2, 3):
                target = 2 * below.shape[dim]
                z = _crop(z, dim, (z.shape[dim] - target) // 2, target)
        return z[:, 0]


# --------------------------------------------------------------------------- fusion

def _magnitude(real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
    """What choose-max compares: |z|^2 (the same order as |z|, without a square root)."""
    return real * real + imag * imag


class DtcwtChooseMax(nn.Module):
    """(K, C, H, W) planes -> (C, H, W): per channel, DT-CWT choose-max fusion of the K inputs
    (mean of the lowpasses; each highpass coefficient from the input of largest |z|, ties to
    the lowest k; with `verify` > 0 the choices are majority-filtered over verify x verify)."""

    box: torch.Tensor  # a buffer: the verification's box filter

    def __init__(self, verify: int = 0, levels: int = LEVELS, biort: str = BIORT, qshift: str = QSHIFT):
        super().__init__()
        verify = int(verify)
        if verify < 0 or (verify and verify % 2 == 0):
            raise ValueError(f"the verification window must be odd and positive (or 0), got {verify}")
        self.verify = verify
        self.transform = DtcwtTransform(levels, biort, qshift)
        window = max(verify, 1)
        self.register_buffer("box", torch.ones(1, 1, window, dtype=torch.float64))
        self._box_taps = [[(0, t, 1.0) for t in range(window)]]

    def window_scores(self, votes: torch.Tensor) -> torch.Tensor:
        """The verification's definition. votes (..., h, w): 1 where a coefficient's label is
        a candidate's -> the candidate's score, twice its votes in the verify x verify window
        plus the centre's own vote. The label of highest score wins, the first (lowest) among
        equals: so the centre wins the ties it is part of."""
        shape = votes.shape
        half = self.verify // 2
        planes = votes.reshape(-1, 1, shape[-2], shape[-1])
        # A separable box sum of 0/1 votes: small exact integers; zero padding adds no
        # votes, which is the window clipped at the borders.
        counts = _correlate(F.pad(planes, (half, half, 0, 0)), 3, self.box, self._box_taps, 1, 1)
        counts = _correlate(F.pad(counts, (0, 0, half, half)), 2, self.box, self._box_taps, 1, 1)
        return counts.reshape(shape) * 2 + votes

    def _labels(self, real: torch.Tensor, imag: torch.Tensor) -> torch.Tensor:
        """real, imag (K, ...) -> (1, ...) the input each coefficient comes from."""
        labels = _argmax0(_magnitude(real, imag))
        if not self.verify:
            return labels
        candidates = torch.arange(real.shape[0], device=real.device).view(-1, 1, 1, 1, 1)
        votes = (labels == candidates).to(real.dtype)  # (K, C, 6, h, w)
        return _argmax0(self.window_scores(votes))

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        k, c, height, width = planes.shape
        lowpass, highpasses = self.transform(planes.reshape(k * c, height, width))
        lowpass = lowpass.reshape(k, c, lowpass.shape[-2], lowpass.shape[-1]).mean(dim=0)
        fused = []
        for real, imag in highpasses:
            shape = (k, c, 6, real.shape[-2], real.shape[-1])
            real, imag = real.reshape(shape), imag.reshape(shape)
            labels = self._labels(real, imag)
            fused.append((torch.gather(real, 0, labels)[0], torch.gather(imag, 0, labels)[0]))
        image = self.transform.inverse(lowpass, fused)
        return _crop(_crop(image, 1, 0, height), 2, 0, width)


class StreamedDtcwtChooseMax:
    """DtcwtChooseMax with the K inputs transformed one at a time, so its memory does not
    grow with K: one input's pyramid, the running choice and (verified) a uint8 label per
    coefficient. Without verification the choice is a running reduction (a later input
    takes a coefficient only with a strictly larger |z|, so ties stay with the lowest k).
    With it, a first pass records the labels, the majority filter decides, and a second
    pass transforms each input again to take the coefficients it won. The choices are the
    stacked module's exactly; the lowpass mean is summed input by input, so a result may
    differ from the stacked one in its last bits."""

    def __init__(self, verify: int = 0, levels: int = LEVELS, biort: str = BIORT, qshift: str = QSHIFT):
        self.stacked = DtcwtChooseMax(verify, levels, biort, qshift)

    def to(self, device) -> StreamedDtcwtChooseMax:
        self.stacked.to(device)
        return self

    def __call__(self, count: int, planes_of) -> torch.Tensor:
        """planes_of(k) -> input k's (C, H, W) planes; -> the fused (C, H, W)."""
        if count > 255:
            raise ValueError(f"the streamed DT-CWT start takes at most 255 inputs, got {count}")
        with torch.no_grad():
            if self.stacked.verify:
                return self._verified(count, planes_of)
            return self._running(count, planes_of)

    def _pyramid(self, planes: torch.Tensor):
        """(C, H, W) -> lowpass (C, h, w), per level (real, imag) (C, 6, h_l, w_l)."""
        return self.stacked.transform(planes)

    def _finish(self, lowpass, chosen, height: int, width: int) -> torch.Tensor:
        image = self.stacked.transform.inverse(lowpass, chosen)
        return _crop(_crop(image, 1, 0, height), 2, 0, width)

    def _choose(self, count: int, planes_of, labelled: bool):
        """The first pass: the lowpass sum and, per level, the coefficients of largest |z|
        so far (ties stay with the earlier input) or, `labelled`, the uint8 label of their
        input instead; and the planes' height and width."""
        lowpass, best = None, []
        chosen: list[Any] = []  # per level: the uint8 labels (labelled), else the (real, imag) kept
        for k in range(count):
            planes = planes_of(k)
            low, highpasses = self._pyramid(planes)
            lowpass = low if lowpass is None else lowpass.add_(low)
            for level, (real, imag) in enumerate(highpasses):
                magnitude = _magnitude(real, imag)
                if k == 0:
                    best.append(magnitude)
                    chosen.append(torch.zeros(magnitude.shape, dtype=torch.uint8, device=magnitude.device)
                                  if labelled else (real, imag))
                    continue
                wins = magnitude > best[level]
                torch.maximum(best[level], magnitude, out=best[level])
                if labelled:
                    chosen[level][wins] = k
                else:
                    torch.where(wins, real, chosen[level][0], out=chosen[level][0])
                    torch.where(wins, imag, chosen[level][1], out=chosen[level][1])
        return lowpass, chosen, planes.shape[-2:]

    def _running(self, count: int, planes_of) -> torch.Tensor:
        lowpass, chosen, size = self._choose(count, planes_of, labelled=False)
        return self._finish(lowpass.div_(count), chosen, *size)

    def _verified(self, count: int, planes_of) -> torch.Tensor:
        lowpass, labels, size = self._choose(count, planes_of, labelled=True)
        decided = [self._majority(level_labels, count) for level_labels in labels]
        del labels
        chosen = None
        for k in range(count):
            _, highpasses = self._pyramid(planes_of(k))
            if chosen is None:
                chosen = highpasses  # input 0's coefficients, replaced where another won
                continue
            for level, (real, imag) in enumerate(highpasses):
                mine = decided[level] == k
                chosen[level][0][mine] = real[mine]
                chosen[level][1][mine] = imag[mine]
        return self._finish(lowpass.div_(count), chosen, *size)

    def _majority(self, labels: torch.Tensor, count: int) -> torch.Tensor:
        """The stacked module's verification (its window_scores), one candidate at a time:
        a later candidate takes a coefficient only with a strictly higher score."""
        best_score, decided = None, torch.zeros(labels.shape, dtype=torch.uint8, device=labels.device)
        for k in range(count):
            votes = (labels == k).to(torch.float32)  # counts are small integers: exact
            score = self.stacked.window_scores(votes)
            if best_score is None:
                best_score = score
                continue
            wins = score > best_score
            decided[wins] = k
            torch.maximum(best_score, score, out=best_score)
        return decided


class DtcwtStartGraph(nn.Module):
    """The exported graph: pixels (K, 3, H, W) -> start (1, 3, H, W), every channel fused
    (a grey set's three equal channels give three equal results)."""

    def __init__(self, verify: int):
        super().__init__()
        self.fuse = DtcwtChooseMax(verify)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.fuse(pixels).reshape(1, 3, pixels.shape[2], pixels.shape[3])


@functools.lru_cache(maxsize=None)
def _module(verify: int, levels: int, biort: str, qshift: str) -> DtcwtChooseMax:
    return DtcwtChooseMax(verify, levels, biort, qshift).eval()


@functools.lru_cache(maxsize=None)
def _streamed(verify: int, levels: int, biort: str, qshift: str) -> StreamedDtcwtChooseMax:
    return StreamedDtcwtChooseMax(verify, levels, biort, qshift)


def choose_max_planes(count: int, planes_of: Callable[[int], torch.Tensor], verify: int, *,
                      device: torch.device | str = "cpu", levels: int = LEVELS, biort: str = BIORT,
                      qshift: str = QSHIFT) -> torch.Tensor:
    """DT-CWT choose-max of `count` inputs, planes_of(k) -> input k's (C, H, W) on `device`,
    in their dtype -> the fused (C, H, W). More than two inputs are transformed one at a time
    (StreamedDtcwtChooseMax), so memory does not grow with K; two in one batch. ValueError
    for a bad window, level count or filter name."""
    options = (int(verify), int(levels), biort, qshift)
    if count > 2:
        return _streamed(*options).to(device)(count, planes_of)
    module = _module(*options).to(device)
    with torch.no_grad():
        return module(torch.stack([planes_of(k) for k in range(count)]))


def dtcwt_start(pixels: torch.Tensor, verify: int, *,
                dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """(K, 3, H, W) pixels 0..255 -> (1, 3, H, W) in pixels' dtype and on its device: what
    engine/start/initialisation.py's `_dtcwt` returns (a channel equal to an earlier one, as in grey
    inputs replicated to RGB, is not transformed again but copied). It computes in `dtype`
    (float64, as the baseline does, by default; None: pixels' own dtype, faster)."""
    compute = dtype if dtype is not None else pixels.dtype
    distinct: list[int] = []
    source: list[int] = []
    for c in range(pixels.shape[1]):
        same_as = next((j for j in distinct if torch.equal(pixels[:, c], pixels[:, j])), None)
        if same_as is None:
            distinct.append(c)
            same_as = c
        source.append(distinct.index(same_as))
    fused = choose_max_planes(len(pixels), lambda k: pixels[k, distinct].to(compute), verify, device=pixels.device)
    index = torch.tensor(source, device=pixels.device)
    return fused.index_select(0, index).unsqueeze(0).to(pixels.dtype)


def graph_suits(pixels: torch.Tensor) -> bool:
    """Whether the exported graph (DtcwtStartGraph) is the way to run the start of these
    (K, 3, H, W) pixels, rather than dtcwt_start: the graph holds all K pyramids at once and
    transforms every channel, where dtcwt_start transforms more than two inputs one at a
    time and a grey set's one plane once."""
    grey = torch.equal(pixels[:, 0], pixels[:, 1]) and torch.equal(pixels[:, 1], pixels[:, 2])
    return len(pixels) <= 2 and not grey


# --------------------------------------------------------------------------- ONNX

def dtcwt_graph_name(verify: int) -> str:
    return f"dtcwt-start-v{int(verify)}.onnx"


def export_dtcwt_graph(verify: int, directory=None) -> Path:
    """The start-image graph for window `verify` (0: no verification): input `pixels`
    (K, 3, H, W) float32 0..255, output `start` (1, 3, H, W); K, H and W dynamic."""
    import sys

    from semfuse_rt.export.graphs.graph_cache import exported_graph

    verify = int(verify)

    def build():
        module = DtcwtStartGraph(verify)
        pixels = torch.rand(2, 3, 37, 53) * 255
        io = {"inputs": ["pixels"], "outputs": ["start"]}
        dynamic = {"pixels": {0: "inputs", 2: "height", 3: "width"}, "start": {2: "height", 3: "width"}}
        return module, (pixels,), io, dynamic

    return exported_graph(dtcwt_graph_name(verify), (sys.modules[__name__],), build, directory)
