"""ONNX Runtime backend (issue 3)."""


def usable() -> bool:
    return False
