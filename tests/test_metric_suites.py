"""Metric suites (engine/evaluation/metric_suites.py), ranking methods on them (engine/evaluation/method_ranking.py),
their reports (engine/evaluation/suite_reports.py) and `eval --metrics`."""
import csv
import io
import json
import math

import cv2
import numpy as np
import pytest

from semfuse_rt.engine.evaluation.method_ranking import ImageScore, average_ranks, image_scores, rank_suites
from semfuse_rt.engine.evaluation.metric_suites import SUITES, Metric, MetricSuite, parse_suites, score_suites
from semfuse_rt.engine.evaluation.suite_reports import CSV_COLUMNS, ranking_markdown, rankings_json, scores_csv
from semfuse_rt.errors import SemfuseError
from conftest import run_main as run_cli


def _never(sources, fused):
    raise AssertionError("a hand-made table is never scored")


# Two metrics in opposite directions, as VIFB's CE (lower is better) beside its EN.
HAND = MetricSuite("hand", "a hand-made suite", (Metric("up", True, "higher is better"),
                                                 Metric("down", False, "lower is better")), _never)


def table(values):
    """{(set, method): (up, down)} -> ImageScores of HAND in category `c`."""
    return [score for (set_name, method), (up, down) in values.items()
            for score in image_scores("c", set_name, method, {"hand": {"up": up, "down": down}})]


# ----------------------------------------------------------------------------- ranks

def test_ranks_follow_each_metrics_direction_and_ties_share_their_mean_rank():
    values = {"a": 3.0, "b": 1.0, "c": 3.0, "d": 2.0, "e": math.nan}
    assert average_ranks(values, higher_is_better=True) == pytest.approx(
        {"a": 1.5, "b": 4.0, "c": 1.5, "d": 3.0, "e": math.nan}, nan_ok=True)
    assert average_ranks(values, higher_is_better=False) == pytest.approx(
        {"a": 3.5, "b": 1.0, "c": 3.5, "d": 2.0, "e": math.nan}, nan_ok=True)
    # Three tied for first share ranks 1, 2 and 3.
    assert average_ranks({"x": 5.0, "y": 5.0, "z": 5.0, "w": 0.0}, True) == {"x": 2.0, "y": 2.0, "z": 2.0, "w": 4.0}


def test_means_ranks_and_mean_ranks_on_a_hand_made_table():
    scores = table({
        ("s1", "A"): (1.0, 10.0), ("s1", "B"): (3.0, 30.0), ("s1", "C"): (2.0, 20.0),
        ("s2", "A"): (3.0, 10.0), ("s2", "B"): (1.0, 10.0), ("s2", "C"): (2.0, 20.0),
    })
    [ranking] = rank_suites(scores, [HAND], ["A", "B", "C"])
    assert ranking.means == {"A": {"up": 2.0, "down": 10.0}, "B": {"up": 2.0, "down": 20.0},
                             "C": {"up": 2.0, "down": 20.0}}
    # up: all tied (2.0 each); down, lower is better: A first, B and C share 2nd and 3rd.
    assert ranking.ranks == {"A": {"up": 2.0, "down": 1.0}, "B": {"up": 2.0, "down": 2.5},
                             "C": {"up": 2.0, "down": 2.5}}
    assert ranking.mean_ranks == {"A": 1.5, "B": 2.25, "C": 2.25}
    assert ranking.methods == ["A", "B", "C"]  # tied mean ranks keep the order given
    assert ranking.images == {"A": 2, "B": 2, "C": 2} and ranking.missing == {}


def test_a_method_missing_from_a_set_is_ranked_on_the_mean_over_its_images():
    scores = table({("s1", "A"): (1.0, 5.0), ("s1", "B"): (2.0, 1.0),
                    ("s2", "A"): (5.0, 5.0)})  # B has no result for s2
    [ranking] = rank_suites(scores, [HAND], ["A", "B"])
    assert ranking.images == {"A": 2, "B": 1}
    assert ranking.means["A"] == {"up": 3.0, "down": 5.0} and ranking.means["B"] == {"up": 2.0, "down": 1.0}
    assert ranking.ranks == {"A": {"up": 1.0, "down": 2.0}, "B": {"up": 2.0, "down": 1.0}}
    assert ranking.missing == {"s2": ["B"]}
    assert "Missing (ranked on the images they have): s2: B." in ranking_markdown([ranking])


def test_undefined_values_are_skipped_and_a_method_with_none_is_ranked_last():
    scores = table({("s1", "A"): (math.nan, 2.0), ("s2", "A"): (4.0, 2.0),
                    ("s1", "B"): (math.nan, math.nan)})
    [ranking] = rank_suites(scores, [HAND], ["B", "A"])
    assert ranking.means["A"] == {"up": 4.0, "down": 2.0}
    assert math.isnan(ranking.mean_ranks["B"]) and ranking.methods == ["A", "B"]
    document = rankings_json([ranking])[0]
    assert document["methods"][1] == {"method": "B", "images": 1, "means": {"up": None, "down": None},
                                      "ranks": {"up": None, "down": None}, "mean_rank": None}


def test_rankings_are_per_category_and_suite():
    other = MetricSuite("other", "another", (Metric("up", True, "higher is better"),), _never)
    scores = [ImageScore("c1", "s", "A", "hand", "up", 1.0), ImageScore("c1", "s", "A", "hand", "down", 1.0),
              ImageScore("c2", "t", "A", "other", "up", 2.0), ImageScore("c2", "t", "B", "other", "up", 3.0)]
    rankings = rank_suites(scores, [HAND, other], ["A", "B"])
    assert [(r.category, r.suite.name) for r in rankings] == [("c1", "hand"), ("c2", "other")]
    assert rankings[1].methods == ["B", "A"] and rankings[1].mean_ranks == {"A": 2.0, "B": 1.0}
    # In c1, B has no image at all: listed, unranked.
    assert rankings[0].images["B"] == 0 and rankings[0].missing == {"s": ["B"]}


# ----------------------------------------------------------------------------- reports

def test_the_csv_has_a_row_per_value():
    scores = [*image_scores("ir", "carLight", "ADF", {"vifb": {"CE": 1.25, "EN": math.nan}}),
              *image_scores("ir", "a,b", "max", {"default": {"Qabf": 0.5}})]
    rows = list(csv.reader(io.StringIO(scores_csv(scores))))
    assert rows == [list(CSV_COLUMNS),
                    ["ir", "carLight", "ADF", "vifb", "CE", "1.25"],
                    ["ir", "carLight", "ADF", "vifb", "EN", ""],
                    ["ir", "a,b", "max", "default", "Qabf", "0.5"]]


def test_the_markdown_marks_lower_is_better_and_orders_by_mean_rank():
    scores = table({("s1", "A"): (1.0, 5.0), ("s1", "B"): (2.0, 1.0)})
    text = ranking_markdown(rank_suites(scores, [HAND], ["A", "B"]))
    assert "### c, suite hand" in text
    assert "| method | images | up | down (lower) | mean rank |" in text
    assert text.index("| `B` | 1 | 2 (1) | 1 (1) | 1 |") < text.index("| `A` | 1 | 1 (2) | 5 (2) | 2 |")


# ----------------------------------------------------------------------------- the registry

def test_the_registry_holds_the_three_suites_with_their_directions():
    from semfuse_rt.engine.metrics.metrics import METRIC_NAMES
    from semfuse_rt.engine.metrics.vifb_metrics import VIFB_METRICS

    assert list(SUITES) == ["default", "vifb", "mefb"]
    assert SUITES["default"].metric_names == METRIC_NAMES
    assert all(metric.higher_is_better for metric in SUITES["default"].metrics)
    assert [(m.name, m.higher_is_better) for m in SUITES["vifb"].metrics] == list(VIFB_METRICS)
    assert [m.name for m in SUITES["vifb"].metrics if not m.higher_is_better] == ["CE", "RMSE", "Qcv"]
    assert SUITES["mefb"].metric_names == ("MEF-SSIM", "Qabf")
    assert all(metric.description for suite in SUITES.values() for metric in suite.metrics)


def test_parse_suites():
    assert [s.name for s in parse_suites("vifb, mefb")] == ["vifb", "mefb"]
    assert [s.name for s in parse_suites("all")] == list(SUITES)
    with pytest.raises(SemfuseError, match=r"^--metrics: unknown suite 'vifB'; use one or more of default, vifb, mefb"):
        parse_suites("default,vifB")
    with pytest.raises(SemfuseError, match="listed twice"):
        parse_suites("vifb,vifb")
    with pytest.raises(SemfuseError, match="names no suite"):
        parse_suites(" , ")


def test_suites_sharing_a_scorer_run_it_once(rng):
    calls = []

    def scorer(sources, fused):
        calls.append(1)
        return {"up": 1.0, "down": 2.0, "extra": 3.0}

    first = MetricSuite("first", "", (Metric("up", True, ""),), scorer)
    second = MetricSuite("second", "", (Metric("down", False, ""), Metric("up", True, "")), scorer)
    image = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    assert score_suites([first, second], [image, image], image) == {"first": {"up": 1.0},
                                                                    "second": {"down": 2.0, "up": 1.0}}
    assert len(calls) == 1
    assert score_suites([first], [image, image], image, known={scorer: {"up": 7.0}}) == {"first": {"up": 7.0}}
    assert len(calls) == 1


def test_the_default_suite_is_the_projects_metrics(rng):
    from semfuse_rt.engine.metrics.metrics import fusion_metrics

    sources = [rng.integers(0, 256, (40, 40), dtype=np.uint8) for _ in range(2)]
    fused = ((sources[0].astype(int) + sources[1]) // 2).astype(np.uint8)
    assert SUITES["default"].score(sources, fused) == fusion_metrics(sources, fused)


# ----------------------------------------------------------------------------- eval --metrics

@pytest.fixture
def pairs(tmp_path, rng):
    """Two categories of two-source sets, large enough for VIFB's 31 x 31 and 16 x 16 windows."""
    root = tmp_path / "sets"
    for category, names in (("ir", ("Camp", "Road")), ("focus", ("leaf",))):
        for name in names:
            for label in ("A", "B"):
                path = root / category / f"{name}_{label}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(path), rng.integers(0, 256, (48, 56), dtype=np.uint8))
    return root


def test_eval_ranks_the_methods_on_each_suite(pairs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    code, printed, err = run_cli(monkeypatch, capsys, "eval", pairs, "--methods", "average,dwt", "--metrics",
                                 "default,vifb", "--no-retention", "--no-grids", "-q", "--out", out)
    assert code in (0, None), err
    assert "ir, suite vifb" in printed and "focus, suite default" in printed and "mean rank" in printed
    document = json.loads((out / "results.json").read_text())
    assert document["settings"]["suites"] == ["default", "vifb"]
    assert "--metrics default,vifb" in document["settings"]["command"]
    assert [(r["category"], r["suite"]) for r in document["suites"]] == [
        ("focus", "default"), ("focus", "vifb"), ("ir", "default"), ("ir", "vifb")]
    ir_vifb = document["suites"][3]
    assert {m["method"] for m in ir_vifb["methods"]} == {"average", "dwt"}
    assert all(m["images"] == 2 for m in ir_vifb["methods"])
    # Today's per-result metrics are kept, with each suite's values beside them.
    result = document["results"][0]
    assert "Qabf" in result["metrics"] and "R5" in result["metrics"]
    assert list(result["suites"]) == ["default", "vifb"] and len(result["suites"]["vifb"]) == 13
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 3 * 2 * (10 + 13)  # sets x methods x the suites' metrics
    mean_ce = np.mean([float(r["value"]) for r in rows
                       if (r["category"], r["method"], r["suite"], r["metric"]) == ("ir", "dwt", "vifb", "CE")])
    dwt = next(m for m in ir_vifb["methods"] if m["method"] == "dwt")
    assert dwt["means"]["CE"] == pytest.approx(mean_ce)
    markdown = (out / "results.md").read_text()
    assert "## Metric suites: means, ranks and mean ranks" in markdown and "### ir, suite vifb" in markdown
    assert "| CE (lower) |" in markdown


def test_eval_with_an_unknown_suite_is_one_line_and_writes_nothing(pairs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    code, printed, err = run_cli(monkeypatch, capsys, "eval", pairs, "--methods", "average", "--metrics", "vifb,mef",
                                 "--no-retention", "-q", "--out", out)
    assert code == 2
    assert err.strip().splitlines() == ["semfuse-rt: error: --metrics: unknown suite 'mef'; use one or more of "
                                        "default, vifb, mefb, comma-separated, or all"]
    assert not out.exists()


def test_eval_writes_an_infinite_psnr_as_null(tmp_path, monkeypatch, capsys, rng):
    """Identical sources averaged: VIFB's PSNR is infinite, which JSON cannot hold."""
    image = rng.integers(0, 256, (48, 56), dtype=np.uint8)
    for label in ("A", "B"):
        path = tmp_path / "sets" / "same" / f"x_{label}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), image)
    out = tmp_path / "out"
    code, printed, err = run_cli(monkeypatch, capsys, "eval", tmp_path / "sets", "--methods", "average",
                                 "--metrics", "vifb", "--no-retention", "--no-grids", "-q", "--out", out)
    assert code in (0, None), err
    document = json.loads((out / "results.json").read_text())
    assert document["results"][0]["suites"]["vifb"]["PSNR"] is None
    assert document["suites"][0]["methods"][0]["means"]["PSNR"] is None
    assert document["suites"][0]["methods"][0]["ranks"]["PSNR"] == 1.0
