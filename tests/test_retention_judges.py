"""Semantic retention judged by one or several ImageNet classifiers."""
import numpy as np
import pytest
from conftest import dataset

from semfuse_rt.engine.semantic.classifier import classify, efficientnet_classifier
from semfuse_rt.engine.io.images import load_image
from semfuse_rt.engine.evaluation.retention_judges import (JUDGE_NAMES, POOLED_NAMES, RetentionJudges, compare_paired,
                                                metric_names, parse_judges, sign_test)
from semfuse_rt.errors import SemfuseError


@pytest.mark.parametrize("text,expected", [
    ("lite0", ("efficientnet-lite0",)),
    ("lite2, efficientnet-lite0", ("efficientnet-lite2", "efficientnet-lite0")),
    ("all", JUDGE_NAMES),
    ("lite1,all", ("efficientnet-lite1", "efficientnet-lite0", "efficientnet-lite2")),
])
def test_judges_are_named_short_or_long_once_each(text, expected):
    assert parse_judges(text) == expected


@pytest.mark.parametrize("text", ["lite3", "vgg19", " , "])
def test_unknown_or_missing_judges_are_refused(text):
    with pytest.raises(SemfuseError, match="judge"):
        parse_judges(text)


def test_each_judge_gets_its_own_r5_only_when_there_are_several():
    assert metric_names(["efficientnet-lite1"]) == POOLED_NAMES
    assert metric_names(JUDGE_NAMES) == (*POOLED_NAMES, "R5 lite0", "R5 lite1", "R5 lite2")


@pytest.fixture(scope="module")
def judges():
    return RetentionJudges(JUDGE_NAMES)


def photo(name):
    return load_image(dataset("multifocus") / f"{name}.jpg")


def test_a_fused_image_equal_to_the_inputs_keeps_their_class_first(judges):
    image = photo("lytro-05-A")
    scores = judges([image, image], image)
    assert scores["R5"] == 1.0 and scores["rank"] == 1.0
    own = [classify(c, [image], k=1)[0][0].probability for c in judges.classifiers]
    assert scores["P"] == pytest.approx(np.mean(own), rel=1e-5)


def test_pooled_scores_are_the_mean_over_every_input_and_judge(judges):
    """A chain-link fence (lytro-05) against noise: the noise's own class is kept by the
    noise, the fence's class is lost by it, so each judge keeps between one and two of two."""
    fence = photo("lytro-05-A")
    noise = np.random.default_rng(0).integers(0, 256, fence.shape, dtype=np.uint8)
    scores = judges([fence, noise], noise)
    per_judge = [scores[f"R5 lite{i}"] for i in range(3)]
    assert all(0.5 <= value <= 1.0 for value in per_judge)
    assert min(per_judge) == 0.5  # the fence is lost by at least one judge
    assert scores["R5"] == pytest.approx(np.mean(per_judge))
    assert scores["rank"] > 1


@pytest.mark.parametrize("name,size", [("efficientnet-lite1", 240), ("efficientnet-lite2", 260)])
def test_the_independent_judges_read_images_at_their_own_size(name, size):
    classifier = efficientnet_classifier(name)
    assert classifier.input_size == size
    assert classifier.cam_layers == ("network._blocks.6", "network._blocks.14", "network._head_act")


@pytest.mark.parametrize("wins,losses,p", [
    (7, 2, 2 * (1 + 9 + 36) / 512),  # 9 discordant pairs: P(X <= 2) twice
    (2, 7, 2 * (1 + 9 + 36) / 512),
    (0, 0, 1.0),
    (3, 3, 1.0),
    (0, 6, 2 / 64),
])
def test_sign_test_is_exact_and_two_sided(wins, losses, p):
    assert sign_test(wins, losses) == pytest.approx(p)


def test_paired_comparison_counts_discordant_judgements_and_inputs():
    """Two inputs, three judges. Method a keeps input 0 with every judge; b with one judge.
    Input 1: a keeps it with two judges, b with all three."""
    first, second = {}, {}
    for judge, (a0, b0, a1, b1) in enumerate([(1, 1, 1, 1), (1, 0, 1, 1), (1, 0, 0, 1)]):
        first[("ir", "s", 0, judge)], second[("ir", "s", 0, judge)] = bool(a0), bool(b0)
        first[("ir", "s", 1, judge)], second[("ir", "s", 1, judge)] = bool(a1), bool(b1)
    [row] = compare_paired(first, second, judge_count=3)
    assert (row["judgements"], row["inputs"]) == (6, 2)
    assert (row["r5_a"], row["r5_b"]) == (5 / 6, 4 / 6)
    assert (row["a_only"], row["b_only"]) == (2, 1)
    assert (row["a_inputs"], row["b_inputs"]) == (1, 0)  # input 0: kept by 3 of 3 against 1 of 3
    assert row["p"] == pytest.approx(1.0) and row["p_inputs"] == pytest.approx(1.0)


def test_inputs_judged_once_score_each_fused_image_as_in_semantic_retention(judges):
    from semfuse_rt.engine.semantic.cam import semantic_retention

    fence, lock = photo("lytro-05-A"), photo("lytro-06-A")
    judged = judges.judged_inputs([fence, lock])
    for fused in (fence, lock, (fence // 2 + lock // 2)):
        rows = [row for classifier in judges.classifiers for row in semantic_retention([fence, lock], fused, classifier)]
        scores = judged(fused)
        assert scores["rank"] == pytest.approx(np.mean([row.fused_rank for row in rows]))
        assert scores["P"] == pytest.approx(np.mean([row.fused_probability for row in rows]), rel=1e-4)
        assert scores["R5"] == pytest.approx(np.mean([row.fused_rank <= 5 for row in rows]))
