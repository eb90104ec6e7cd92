"""The ONNX opsets the graphs are exported at. Apart from export/graphs/onnx_export.py, which
imports torch and onnx, so that `build --help` shows the default without them."""
from __future__ import annotations

from semfuse_rt.errors import SemfuseError

DEFAULT_OPSET = 17
MIN_OPSET = 17  # the oldest opset the graphs are exported and tested at


def max_opset() -> int:
    """The newest opset that the installed exporter (TorchScript's) and onnx both write."""
    import onnx
    from torch.onnx import _constants

    exporter = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET)
    return min(exporter, onnx.defs.onnx_opset_version())


def check_opset(opset: int) -> int:
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= max_opset():
        raise SemfuseError(f"--opset must be from {MIN_OPSET} to {max_opset()} (what this torch and onnx export), "
                           f"got {opset}")
    return opset
