"""Semantic retention, the paper's own claim, judged by ImageNet classifiers: for each input's
top-1 class, whether it is in the fused image's top 5 (R5), its rank there and its
probability there.

EfficientNet-Lite0 is also the CAM classifier that guides the semantic methods, so it judges
their results by their own guide. EfficientNet-Lite1 and -Lite2 (the `judges` extra) were
trained apart from it and judge independently. Several judges pool their judgements: every
(input, judge) pair counts once, so a category's R5 also rests on that many more counts.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from semfuse_rt.errors import SemfuseError
from semfuse_rt.export.networks.efficientnet_variants import LITE0, VARIANTS

PREFIX = "efficientnet-"
JUDGE_NAMES = tuple(VARIANTS)
DEFAULT_JUDGES = (LITE0.name,)
POOLED_NAMES = ("R5", "rank", "P")
TOP = 5


def short_name(name: str) -> str:
    return name.removeprefix(PREFIX)


def parse_judges(text: str) -> tuple[str, ...]:
    """"lite0,lite2", "efficientnet-lite1" or "all" -> full judge names, in the order given."""
    names = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        chosen = JUDGE_NAMES if part == "all" else (part if part.startswith(PREFIX) else PREFIX + part,)
        for name in chosen:
            if name not in JUDGE_NAMES:
                raise SemfuseError(f"unknown judge {part!r}; use {', '.join(map(short_name, JUDGE_NAMES))} or all")
            if name not in names:
                names.append(name)
    if not names:
        raise SemfuseError("no judges given (e.g. --judges lite0,lite1,lite2)")
    return tuple(names)


def metric_names(judges: Sequence[str]) -> tuple[str, ...]:
    """The pooled scores, then each judge's own R5 when there are several."""
    if len(judges) < 2:
        return POOLED_NAMES
    return (*POOLED_NAMES, *(f"R5 {short_name(name)}" for name in judges))


class RetentionJudges:
    """The judges' classifiers, loaded once; called on (inputs, fused) -> {metric: value}.
    `judged_inputs(inputs)` classifies the inputs once for many fused images of them."""

    def __init__(self, names: Sequence[str] = DEFAULT_JUDGES):
        from semfuse_rt.engine.semantic.classifier import efficientnet_classifier

        self.names = tuple(names)
        self.classifiers = [efficientnet_classifier(name) for name in self.names]

    @property
    def metric_names(self) -> tuple[str, ...]:
        return metric_names(self.names)

    def judged_inputs(self, inputs: Sequence[np.ndarray]) -> "JudgedInputs":
        from semfuse_rt.engine.semantic.classifier import predict

        return JudgedInputs(self, [predict(classifier, inputs).argmax(dim=1) for classifier in self.classifiers])

    def __call__(self, inputs: Sequence[np.ndarray], fused: np.ndarray) -> dict[str, float]:
        return self.judged_inputs(inputs)(fused)


class JudgedInputs:
    """Each judge's top-1 class of each input; called on a fused image -> {metric: value}."""

    def __init__(self, judges: RetentionJudges, classes):
        self.judges, self.classes = judges, classes

    def __call__(self, fused: np.ndarray) -> dict[str, float]:
        from semfuse_rt.engine.semantic.classifier import predict

        scores: dict[str, float] = {}
        ranks: list[int] = []
        probabilities: list[float] = []
        for name, classifier, classes in zip(self.judges.names, self.judges.classifiers, self.classes):
            row = predict(classifier, [fused])[0]
            chosen = row[classes]
            judged = (1 + (row[None, :] > chosen[:, None]).sum(dim=1)).tolist()
            ranks += judged
            probabilities += chosen.tolist()
            scores[f"R5 {short_name(name)}"] = sum(rank <= TOP for rank in judged) / len(judged)
        pooled = {"R5": sum(rank <= TOP for rank in ranks) / len(ranks),
                  "rank": float(np.mean(ranks)), "P": float(np.mean(probabilities))}
        measured = {**scores, **pooled}  # every metric name is one or the other
        return {name: measured[name] for name in self.judges.metric_names}


def unjudged(judges: Sequence[str]) -> dict[str, float]:
    """The scores of a run that skips the classifiers: every one undefined."""
    return {name: math.nan for name in metric_names(judges)}


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided p of `wins` against `losses` under a fair coin."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def compare_paired(first: dict, second: dict, judge_count: int) -> list[dict]:
    """Two methods' judgements {(category, set, input, judge): kept in the top 5} on the same
    inputs -> per category: each one's R5, the judgements kept by one method only, and an
    exact sign test on those (McNemar's); then the same per input, an input kept where at
    least half of the judges keep it (the judges see one image, so their judgements are
    not independent)."""
    rows = []
    for category in dict.fromkeys(key[0] for key in first):
        keys = [key for key in first if key[0] == category]
        inputs = sorted({key[:3] for key in keys})
        majority = {}
        for which, kept in (("a", first), ("b", second)):
            for item in inputs:
                votes = sum(kept[key] for key in keys if key[:3] == item)
                majority[(which, item)] = 2 * votes >= judge_count
        a_only = sum(first[k] and not second[k] for k in keys)
        b_only = sum(second[k] and not first[k] for k in keys)
        a_inputs = sum(majority[("a", i)] and not majority[("b", i)] for i in inputs)
        b_inputs = sum(majority[("b", i)] and not majority[("a", i)] for i in inputs)
        rows.append({
            "category": category, "judgements": len(keys),
            "r5_a": sum(first[k] for k in keys) / len(keys), "r5_b": sum(second[k] for k in keys) / len(keys),
            "a_only": a_only, "b_only": b_only, "p": sign_test(a_only, b_only),
            "inputs": len(inputs), "a_inputs": a_inputs, "b_inputs": b_inputs,
            "p_inputs": sign_test(a_inputs, b_inputs),
        })
    return rows
