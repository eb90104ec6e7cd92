"""The CUDA backend for the first layer: the fused gradient kernel in the captured loop.

loader.py builds or loads what the backend needs; runner.py runs it. Nothing is imported
here, so that importing one module of the backend does not pull in torch or the others.
"""
