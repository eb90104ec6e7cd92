"""The TensorRT backend: engines built from the exported graphs, run with the captured loop.

loader.py builds or loads what the backend needs; runner.py runs it. Nothing is imported
here, so that importing one module of the backend does not pull in torch or the others.
"""
