"""Test-only helpers, kept out of the installed package (issue 29): the kernels' host build and
numpy references, their GPU parity check and traffic model, a runner without a network for
optimisation loops, and the OpenCV reference of the mean base layer.

Importable as `support` because pytest puts tests/ on sys.path (its default rootdir mode, as
for `conftest`); the GPU scripts under benchmarks/ put tests/ there themselves."""
