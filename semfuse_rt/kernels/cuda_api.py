"""The one entry point to cuda-python: its runtime, driver and NVRTC modules under either
package layout, and the status check.

cuda-python >= 12.6 ships them as cuda.bindings.{runtime,driver,nvrtc}; older releases as
cuda.{cudart,cuda,nvrtc}. Every call returns (status, *values); `checked` turns a bad status
into one readable error.
"""

from __future__ import annotations

import functools
from types import ModuleType

from semfuse_rt.errors import SemfuseError

INSTALL_HINT = "install cuda-python matching the driver's CUDA major version (pip install 'semfuse-rt[gpu]')"


@functools.lru_cache(maxsize=1)
def cuda_modules() -> tuple[ModuleType, ModuleType]:
    """(driver, nvrtc); SemfuseError if cuda-python is missing."""
    try:
        from cuda.bindings import driver, nvrtc
    except ImportError:
        try:
            from cuda import cuda as driver
            from cuda import nvrtc
        except ImportError as error:
            raise SemfuseError(
                f"the CUDA kernels need cuda-python, which is not installed: {INSTALL_HINT}"
            ) from error
    return driver, nvrtc


@functools.lru_cache(maxsize=1)
def cuda_runtime() -> ModuleType:
    """The runtime API (cudart); SemfuseError if cuda-python is missing."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as error:
            raise SemfuseError(f"cuda-python is not installed: {INSTALL_HINT}") from error
    return runtime


def checked(result, call: str):
    """The values of a cuda-python call, or SemfuseError naming the call and its status."""
    status, *values = result if isinstance(result, tuple) else (result,)
    if int(status) != 0:
        name = getattr(status, "name", str(status))
        raise SemfuseError(f"{call} failed with {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)
