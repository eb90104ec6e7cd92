"""Set discovery in the benchmarks' layout (BENCH/CATEGORY/...), beside the datasets' layout
(CATEGORY/...), and the file names built from a category found below a grouping folder."""
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import benchmark
from semfuse_rt.engine.streams.batch import plan_batch
from semfuse_rt.engine.evaluation.datasets import FusionSet, discover_sets, find_sets
from semfuse_rt.engine.evaluation.evaluation import fused_image_path, grid_path, side_by_side_path
from semfuse_rt.engine.evaluation.scoring import find_fused
from semfuse_rt.errors import SemfuseError

FUSED_REASON = "holds fused images of the sets of {}; score them with `semfuse-rt score`"


def write(folder: Path, stems, rng, shape=(20, 24)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        assert cv2.imwrite(str(folder / f"{stem}.png"), rng.integers(0, 256, shape, dtype=np.uint8))


def pairs(*names, labels=("IR", "Vis")) -> list[str]:
    return [f"{name}_{label}" for name in names for label in labels]


def found(discovery) -> dict[str, list[str]]:
    return {s.key: [p.name for p in s.sources] for s in discovery.sets}


def skipped_reasons(discovery, root: Path) -> list[str]:
    return [reason.replace(str(root) + "/", "") for reason in discovery.skipped]


# ----------------------------------------------------------------------------- layouts

def test_flat_pairs_below_a_benchmark_folder_are_sets_of_a_category_named_by_its_path(tmp_path, rng):
    write(tmp_path / "roadscene" / "infrared_visible", pairs("FLIR_00006", "FLIR_00018"), rng)
    discovery = discover_sets(tmp_path)
    assert found(discovery) == {
        "roadscene/infrared_visible/FLIR_00006": ["FLIR_00006_IR.png", "FLIR_00006_Vis.png"],
        "roadscene/infrared_visible/FLIR_00018": ["FLIR_00018_IR.png", "FLIR_00018_Vis.png"]}
    assert discovery.skipped == []


def test_set_folders_below_a_benchmark_folder_are_one_category(tmp_path, rng):
    for name in ("507", "Arno", "Candle"):
        write(tmp_path / "mefb" / "multiexposure" / name, pairs(name, labels=("A", "B")), rng)
    discovery = discover_sets(tmp_path)
    assert found(discovery) == {f"mefb/multiexposure/{name}": [f"{name}_A.png", f"{name}_B.png"]
                                for name in ("507", "Arno", "Candle")}


def test_grouping_folders_two_deep_and_a_category_at_the_root_beside_them(tmp_path, rng):
    write(tmp_path / "group" / "inner" / "multifocus", pairs("a-01", "a-02", labels=("A", "B")), rng)
    write(tmp_path / "group" / "inner" / "exposure" / "door", ["door1", "door2", "door3"], rng)
    write(tmp_path / "group" / "inner" / "exposure" / "garage", ["garage1", "garage2"], rng)
    write(tmp_path / "ir", pairs("Camp"), rng)  # a root-level category of one pair stays one
    discovery = discover_sets(tmp_path)
    assert list(found(discovery)) == ["group/inner/exposure/door", "group/inner/exposure/garage",
                                      "group/inner/multifocus/a-01", "group/inner/multifocus/a-02", "ir/Camp"]
    assert len(found(discovery)["group/inner/exposure/door"]) == 3


def test_two_benchmarks_with_the_same_category_name_stay_apart(tmp_path, rng):
    write(tmp_path / "roadscene" / "infrared_visible", pairs("x", "y"), rng)
    write(tmp_path / "vifb" / "infrared_visible", pairs("x", "z"), rng)
    sets = find_sets(tmp_path, categories=["vifb/infrared_visible"]).sets
    assert [s.key for s in sets] == ["vifb/infrared_visible/x", "vifb/infrared_visible/z"]
    assert Counter(s.category for s in discover_sets(tmp_path).sets) == {
        "roadscene/infrared_visible": 2, "vifb/infrared_visible": 2}
    with pytest.raises(SemfuseError, match="unknown category infrared_visible; found: roadscene/infrared_visible, "
                                           "vifb/infrared_visible"):
        find_sets(tmp_path, categories=["infrared_visible"])


def test_the_datasets_layout_keeps_its_category_names(tmp_path, rng):
    write(tmp_path / "infrared_visible", pairs("Camp", "Dune"), rng)
    write(tmp_path / "multiexposure" / "chair", ["chairs1", "chairs2"], rng)
    write(tmp_path / "multiexposure" / "door", ["door1", "door2"], rng)
    write(tmp_path / "medical", ["c01_1", "c01_2"], rng)
    assert list(found(discover_sets(tmp_path))) == [
        "infrared_visible/Camp", "infrared_visible/Dune", "medical/c01", "multiexposure/chair", "multiexposure/door"]
    assert list(found(discover_sets(tmp_path / "infrared_visible"))) == ["infrared_visible/Camp",
                                                                         "infrared_visible/Dune"]


def test_folders_too_deep_or_without_images_are_skipped_with_their_reason(tmp_path, rng):
    write(tmp_path / "a" / "b" / "c" / "d" / "cat", pairs("x", "y"), rng)  # category 5 levels down
    write(tmp_path / "a" / "b" / "c" / "shallow", pairs("x", "y"), rng)  # 4 levels down: found
    (tmp_path / "bench" / "published").mkdir(parents=True)
    (tmp_path / "bench" / "published" / "x_ADF_Qabf.txt").write_text("0.5")
    discovery = discover_sets(tmp_path)
    assert list(found(discovery)) == ["a/b/c/shallow/x", "a/b/c/shallow/y"]
    assert skipped_reasons(discovery, tmp_path) == [
        f"a/b/c/d: more than 4 folders below {tmp_path}; give a folder nearer its sets",
        "bench/published: holds no images and no folders of them"]


# ----------------------------------------------------------------------------- fused images beside their sets

def test_a_folder_of_fused_images_beside_its_sets_is_skipped_with_the_reason(tmp_path, rng):
    write(tmp_path / "vifb" / "infrared_visible", pairs("carLight", "fight"), rng)
    methods = ("ADF", "CBF", "LP_SR")  # LP_SR: a method name holding `_`
    write(tmp_path / "vifb" / "results", [f"{s}_{m}" for s in ("carLight", "fight") for m in methods], rng)
    write(tmp_path / "one-method", pairs("x", "y"), rng)
    write(tmp_path / "one-method-fused", ["x_ADF", "y_ADF"], rng)  # no sets of its own at all
    discovery = discover_sets(tmp_path)
    assert list(found(discovery)) == ["one-method/x", "one-method/y",
                                      "vifb/infrared_visible/carLight", "vifb/infrared_visible/fight"]
    assert skipped_reasons(discovery, tmp_path) == [
        "one-method-fused: " + FUSED_REASON.format("one-method"),
        "vifb/results: " + FUSED_REASON.format("vifb/infrared_visible")]
    # Given alone, the same folder is what the user asked for: a category (x_LP_SR is a lone x_LP).
    assert Counter(s.category for s in discover_sets(tmp_path / "vifb" / "results").sets) == {"results": 2}


def test_fused_images_beside_set_folders_are_skipped(tmp_path, rng):
    for name in ("507", "Arno"):
        write(tmp_path / "mefb" / "multiexposure" / name, pairs(name, labels=("A", "B")), rng)
    write(tmp_path / "mefb" / "fused", ["507_Mertens", "507_PMEF", "Arno_Mertens", "Arno_PMEF"], rng)
    discovery = discover_sets(tmp_path)
    assert list(found(discovery)) == ["mefb/multiexposure/507", "mefb/multiexposure/Arno"]
    assert skipped_reasons(discovery, tmp_path) == ["mefb/fused: " + FUSED_REASON.format("mefb/multiexposure")]


def test_categories_that_share_set_names_are_not_taken_for_fused_images(tmp_path, rng):
    # The same set names and labels: sources of sets of the same names, not fused images.
    write(tmp_path / "ir", pairs("x", "y", labels=("1", "2")), rng)
    write(tmp_path / "med", pairs("x", "y", labels=("1", "2")), rng)
    # Other labels, as many images per set: names cannot say which holds the sources, so both stay.
    write(tmp_path / "bench" / "thermal", pairs("Camp", "Dune", labels=("IR", "Vis")), rng)
    write(tmp_path / "bench" / "nir", pairs("Camp", "Dune", labels=("NIR", "RGB")), rng)
    # One image that is no set's fused image keeps the folder a category.
    write(tmp_path / "bench" / "mixed", ["Camp_ADF", "Dune_ADF", "other_1", "other_2"], rng)
    discovery = discover_sets(tmp_path)
    assert Counter(s.category for s in discovery.sets) == {
        "ir": 2, "med": 2, "bench/thermal": 2, "bench/nir": 2, "bench/mixed": 1}
    assert not [reason for reason in discovery.skipped if "fused images" in reason]


# ----------------------------------------------------------------------------- file names from a category

def test_a_category_below_a_grouping_folder_is_a_subfolder_in_every_file_name(tmp_path, rng):
    write(tmp_path / "sets" / "bench" / "ir", pairs("x", "y"), rng)
    sets = find_sets(tmp_path / "sets").sets
    out = tmp_path / "out"
    assert [job.output for job in plan_batch(sets, out).todo] == [out / "bench" / "ir" / "x.png",
                                                                  out / "bench" / "ir" / "y.png"]
    assert grid_path(out, "bench/ir") == out / "grid-bench" / "ir.png"
    assert side_by_side_path(out, "bench/ir", "x") == out / "side-by-side" / "bench" / "ir" / "x.png"
    assert fused_image_path(out, "bench/ir", "x", "max") == out / "bench" / "ir" / "x--max.png"
    # A category from a CSV cannot lead out of the folder, in reports or in a batch.
    assert fused_image_path(out, "../up", "x", "max") == out / "_" / "up" / "x--max.png"
    assert grid_path(out, "a/../b") == out / "grid-a" / "_" / "b.png"
    plan = plan_batch([FusionSet("a/../b", "x", (tmp_path / "a.png", tmp_path / "b.png"))], out)
    assert not plan.todo and "its category '..' cannot be a file name" in plan.rejected[0].error
    # `score` looks for a category's fused images in FUSED/CATEGORY/ the same way.
    write(tmp_path / "fused" / "bench" / "ir", ["x_ADF", "y_ADF"], rng)
    fused = find_fused(sets, tmp_path / "fused")
    assert [(image.fusion_set.key, image.method) for image in fused.images] == [("bench/ir/x", "ADF"),
                                                                                 ("bench/ir/y", "ADF")]


def test_eval_writes_the_reports_of_a_benchmark_tree_in_subfolders(monkeypatch, capsys, tmp_path, rng):
    from semfuse_rt.engine.cli import main

    sets = tmp_path / "benchmarks"
    # Two pairs each: a benchmark folder whose every subfolder holds a single set reads as a
    # category of set folders (the datasets' multiexposure/door/), which the layout cannot tell apart.
    write(sets / "roadscene" / "infrared_visible", pairs("FLIR_1", "FLIR_2"), rng)
    write(sets / "vifb" / "infrared_visible", pairs("carLight", "fight"), rng)
    write(sets / "vifb" / "fused", [f"{s}_{m}" for s in ("carLight", "fight") for m in ("ADF", "CBF", "DLF")], rng)
    before = {path: path.read_bytes() for path in sets.rglob("*") if path.is_file()}
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["semfuse-rt", "eval", str(sets), "--methods", "average", "--no-retention",
                                      "-q", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    assert exit_info.value.code in (0, None), captured.err
    assert "roadscene/infrared_visible (2 sets)" in captured.out and "vifb/infrared_visible (2 sets)" in captured.out
    assert f"skipped {sets / 'vifb' / 'fused'}: " + FUSED_REASON.format("vifb/infrared_visible") in captured.err
    assert (out / "grid-roadscene" / "infrared_visible.png").is_file()
    assert (out / "grid-vifb" / "infrared_visible.png").is_file()
    assert (out / "side-by-side" / "roadscene" / "infrared_visible" / "FLIR_1.png").is_file()
    assert (out / "side-by-side" / "vifb" / "infrared_visible" / "carLight.png").is_file()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]
    assert {path: path.read_bytes() for path in sets.rglob("*") if path.is_file()} == before


# ----------------------------------------------------------------------------- the shared benchmarks

def test_the_shared_benchmarks_are_found_set_by_set():
    root = benchmark()
    discovery = discover_sets(root)
    assert Counter(s.category for s in discovery.sets) == {
        "roadscene/infrared_visible": 221, "mefb/multiexposure": 47, "mfifb/multifocus": 43,
        "vifb-calibration/infrared_visible": 5}
    assert {len(s.sources) for s in discovery.sets} == {2}
    assert len({s.key for s in discovery.sets}) == 316
    assert [p.name for p in next(s for s in discovery.sets if s.name == "FLIR_00006").sources] == [
        "FLIR_00006_IR.jpg", "FLIR_00006_Vis.jpg"]
    assert f"{root / 'vifb-calibration' / 'fused'}: " + FUSED_REASON.format(
        "vifb-calibration/infrared_visible") in discovery.skipped
    assert not [reason for reason in discovery.skipped
                if "fused" not in reason and "published" not in reason], discovery.skipped


def test_the_vifb_calibration_folder_gives_its_pairs_and_score_finds_their_fused_images():
    root = benchmark("vifb-calibration")
    sets = find_sets(root).sets
    assert [s.key for s in sets] == [f"infrared_visible/{name}"
                                     for name in ("carLight", "fight", "manCall", "manwithbag", "snow")]
    fused = find_fused(sets, root / "fused")
    assert len(fused.images) == 125 and len(fused.methods) == 25 and not fused.skipped
