"""TensorRT backend (issue 7)."""


def usable() -> bool:
    return False
