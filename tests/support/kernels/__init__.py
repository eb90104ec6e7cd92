"""The CUDA kernels' test side: host build and launchers, numpy references, GPU parity, bytes moved."""
