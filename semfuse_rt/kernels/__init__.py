"""CUDA kernels for the fusion rules and the Adam step, with their host build, Torch twins and
numpy references (see README.md in this folder)."""
