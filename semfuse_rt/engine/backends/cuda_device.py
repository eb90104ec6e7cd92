"""One CUDA device through cuda-python's runtime API, without torch: a non-blocking stream,
the allocations made on it, copies, and stream capture into CUDA graphs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semfuse_rt.kernels.cuda_api import checked, cuda_runtime


@dataclass
class DeviceBuffer:
    ptr: int
    nbytes: int


class CudaDevice:
    """One device, one non-blocking stream, and the allocations made through it."""

    def __init__(self, device: int = 0):
        self.rt = cuda_runtime()
        self.device = device
        checked(self.rt.cudaSetDevice(device), "cudaSetDevice")
        # The primary context now, so TensorRT, the kernels and these buffers share it.
        checked(self.rt.cudaFree(0), "cudaFree(0)")
        self._stream = checked(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking),
                              "cudaStreamCreateWithFlags")
        self.stream = int(self._stream)
        self._buffers: dict[int, DeviceBuffer] = {}

    def alloc(self, nbytes: int) -> DeviceBuffer:
        ptr = int(checked(self.rt.cudaMalloc(max(int(nbytes), 1)), f"cudaMalloc({nbytes})"))
        buffer = DeviceBuffer(ptr, int(nbytes))
        self._buffers[ptr] = buffer
        return buffer

    def free(self, buffer: DeviceBuffer | None) -> None:
        if buffer is not None and self._buffers.pop(buffer.ptr, None) is not None:
            checked(self.rt.cudaFree(buffer.ptr), "cudaFree")

    def upload(self, ptr: int, array: np.ndarray) -> None:
        """Host to device on the stream (a pageable source may be reused once this returns)."""
        array = np.ascontiguousarray(array)
        checked(self.rt.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes,
                                       self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream),
               "cudaMemcpyAsync(host to device)")

    def download(self, array: np.ndarray, ptr: int) -> None:
        """Device to host on the stream; `array` is complete after synchronize()."""
        if not array.flags.c_contiguous:
            raise ValueError("download needs a C-contiguous array")
        checked(self.rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes,
                                       self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream),
               "cudaMemcpyAsync(device to host)")

    def copy(self, dst: int, src: int, nbytes: int) -> None:
        checked(self.rt.cudaMemcpyAsync(dst, src, nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                                       self.stream), "cudaMemcpyAsync(device to device)")

    def zero(self, ptr: int, nbytes: int) -> None:
        checked(self.rt.cudaMemsetAsync(ptr, 0, nbytes, self.stream), "cudaMemsetAsync")

    def synchronize(self) -> None:
        checked(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    # CUDA graphs: everything enqueued on the stream between begin and end becomes one graph.
    def begin_capture(self) -> None:
        checked(self.rt.cudaStreamBeginCapture(self.stream, self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal),
               "cudaStreamBeginCapture")

    def end_capture(self):
        return checked(self.rt.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")

    def instantiate(self, graph):
        try:
            return checked(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            # The executable graph holds what it needs; the template can go.
            self.rt.cudaGraphDestroy(graph)

    def launch(self, graph_exec) -> None:
        checked(self.rt.cudaGraphLaunch(graph_exec, self.stream), "cudaGraphLaunch")

    def destroy_graph(self, graph_exec) -> None:
        self.rt.cudaGraphExecDestroy(graph_exec)

    def close(self) -> None:
        for buffer in list(self._buffers.values()):
            self.free(buffer)
        if self._stream is not None:
            self.rt.cudaStreamSynchronize(self.stream)
            self.rt.cudaStreamDestroy(self._stream)
            self._stream = None
