"""Argument checks shared by the host and GPU launchers: a bad call raises here, in Python,
instead of reading out of bounds in a kernel."""

from __future__ import annotations

from semfuse_rt.kernels.source import MAX_INPUTS, MAX_WINDOW

# dtype name -> (kernel-name suffix, bytes per element)
FEATURE_DTYPES = {"float32": ("f32", 4), "float16": ("f16", 2)}


def check_input_count(count: int) -> int:
    if not 2 <= count <= MAX_INPUTS:
        raise ValueError(f"fusion needs 2..{MAX_INPUTS} inputs, got {count}")
    return count


def check_window(window: int) -> int:
    if not (1 <= window <= MAX_WINDOW and window % 2 == 1):
        raise ValueError(f"majority window must be odd and in 1..{MAX_WINDOW}, got {window}")
    return window


def _feature_dtype(dtype: object) -> tuple[str, int]:
    name = str(dtype).removeprefix("torch.")
    if name not in FEATURE_DTYPES:
        raise ValueError(f"feature maps must be float32 or float16, got {name}")
    return FEATURE_DTYPES[name]


def dtype_suffix(dtype: object) -> str:
    """'f32' or 'f16' for a numpy/torch dtype or its name."""
    return _feature_dtype(dtype)[0]


def elements_per_pack(dtype: object) -> int:
    """Elements in one 16-byte vector load, the kernels' unit of work per thread."""
    return 16 // _feature_dtype(dtype)[1]
