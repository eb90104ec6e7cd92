"""The PyTorch backend: eager forward, gradients by torch.autograd. The reference.

loader.py builds or loads what the backend needs; runner.py runs it. Nothing is imported
here, so that importing one module of the backend does not pull in torch or the others.
"""
