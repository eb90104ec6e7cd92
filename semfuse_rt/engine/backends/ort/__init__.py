"""The ONNX Runtime backend: the exported features and explicit-gradient graphs.

loader.py builds or loads what the backend needs; runner.py runs it. Nothing is imported
here, so that importing one module of the backend does not pull in torch or the others.
"""
