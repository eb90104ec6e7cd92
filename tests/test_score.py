"""`semfuse-rt score SETS FUSED`: ranking fused images made elsewhere (engine/evaluation/scoring.py)."""
import csv
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from semfuse_rt.engine.evaluation.datasets import find_sets
from semfuse_rt.engine.metrics.metrics import fusion_metrics
from semfuse_rt.engine.evaluation.scoring import find_fused
from semfuse_rt.errors import SemfuseError
from conftest import run_main as run_cli

BENCHMARKS = Path(os.environ.get("SEMFUSE_RT_BENCHMARKS",
                                 Path(__file__).resolve().parents[2] / "shared" / "benchmarks"))
SHAPE = (40, 48)


def write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture
def tree(tmp_path, rng):
    """SETS: a flat folder of pairs, two set names one the start of the other (`man`,
    `man_walk`). FUSED: `man_walk` lacks HMSD_GF, a method whose name holds `_`."""
    sets, fused = tmp_path / "sets", tmp_path / "fused"
    for name in ("man", "man_walk", "snow"):
        for label in ("IR", "Vis"):
            write(sets / f"{name}_{label}.png", rng.integers(0, 256, SHAPE, dtype=np.uint8))
    for stem in ("man_ADF", "man_HMSD_GF", "man_walk_ADF", "snow_ADF", "snow_HMSD_GF"):
        write(fused / f"{stem}.png", rng.integers(0, 256, SHAPE, dtype=np.uint8))
    (fused / "notes.txt").write_text("not an image")
    write(fused / "stray.png", rng.integers(0, 256, SHAPE, dtype=np.uint8))
    return sets, fused


def snapshot(*folders):
    return {path: path.read_bytes() for folder in folders for path in sorted(folder.rglob("*")) if path.is_file()}


# ----------------------------------------------------------------------------- matching

def test_fused_names_match_the_longest_set_name(tree):
    sets, fused = tree
    found = find_fused(find_sets(sets).sets, fused)
    assert [(i.fusion_set.name, i.method) for i in found.images] == [
        ("man", "ADF"), ("man", "HMSD_GF"), ("man_walk", "ADF"), ("snow", "ADF"), ("snow", "HMSD_GF")]
    assert found.methods == ["ADF", "HMSD_GF"]
    assert found.missing() == {"sets/man_walk": ["HMSD_GF"]}
    assert found.unscored == [] and len(found.skipped) == 1 and "stray.png" in found.skipped[0]


def test_a_folder_per_category_and_the_sources_themselves(tmp_path, rng):
    image = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    for category in ("ir", "med"):
        for label in ("A", "B"):
            write(tmp_path / "sets" / category / f"x_{label}.png", image)
        write(tmp_path / "fused" / category / f"x_{category}method.png", image)
    sets = find_sets(tmp_path / "sets").sets
    found = find_fused(sets, tmp_path / "fused")
    assert [(i.fusion_set.key, i.method) for i in found.images] == [("ir/x", "irmethod"), ("med/x", "medmethod")]
    # One flat folder for both categories cannot tell their `x` apart.
    with pytest.raises(SemfuseError, match=r"set name 'x' is in categories ir and med; put each category's"):
        find_fused(sets, tmp_path / "sets" / "ir")
    # The sets' folder given as FUSED: its sources are skipped, never read as methods A and B.
    with pytest.raises(SemfuseError, match=r"no fused image of these sets \(x\); name them SET_METHOD.ext"):
        find_fused(find_sets(tmp_path / "sets" / "ir").sets, tmp_path / "sets" / "ir")


# ----------------------------------------------------------------------------- the command

def test_score_ranks_the_fused_images_and_reports_what_is_missing(tree, tmp_path, monkeypatch, capsys):
    sets, fused = tree
    out = tmp_path / "out"
    code, printed, err = run_cli(monkeypatch, capsys, "score", sets, fused, "--out", out, "-q")
    assert code in (0, None), err
    assert f"skipped {fused / 'stray.png'}: its name starts with no set's name" in err
    assert "set sets/man_walk: no HMSD_GF (each method is ranked on the images it has)" in err
    assert "sets, suite default" in printed and f"wrote {out / 'scores.csv'}" in printed
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md", "scores.csv"]
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 5 * 10
    assert {(r["set"], r["method"]) for r in rows} == {("man", "ADF"), ("man", "HMSD_GF"), ("man_walk", "ADF"),
                                                       ("snow", "ADF"), ("snow", "HMSD_GF")}
    # Each value is the metric of that fused image against its own set's sources.
    sources = [cv2.imread(str(sets / f"man_walk_{label}.png"), cv2.IMREAD_UNCHANGED) for label in ("IR", "Vis")]
    expected = fusion_metrics(sources, cv2.imread(str(fused / "man_walk_ADF.png"), cv2.IMREAD_UNCHANGED))
    got = {r["metric"]: float(r["value"]) for r in rows if (r["set"], r["method"]) == ("man_walk", "ADF")}
    assert got == pytest.approx(expected)
    document = json.loads((out / "results.json").read_text())
    [ranking] = document["rankings"]
    assert ranking["missing"] == {"man_walk": ["HMSD_GF"]}
    images = {m["method"]: m["images"] for m in ranking["methods"]}
    assert images == {"ADF": 3, "HMSD_GF": 2}
    adf_qabf = np.mean([float(r["value"]) for r in rows if (r["method"], r["metric"]) == ("ADF", "Qabf")])
    assert next(m for m in ranking["methods"] if m["method"] == "ADF")["means"]["Qabf"] == pytest.approx(adf_qabf)
    assert document["command"].startswith(f"semfuse-rt score {sets} {fused} --metrics default")
    assert "Missing (ranked on the images they have): man_walk: HMSD_GF." in (out / "results.md").read_text()


def test_score_ranks_semfuse_methods_beside_the_fused_images(tree, tmp_path, monkeypatch, capsys, random_vgg_weights):
    from semfuse_rt.export.networks.weights import _save_cache

    sets, fused = tree
    weights = tmp_path / "weights.pt"
    _save_cache(weights, random_vgg_weights)
    out = tmp_path / "out"
    code, printed, err = run_cli(monkeypatch, capsys, "score", sets, fused, "--methods", "average,max@steps=1",
                                 "--weights", weights, "--metrics", "default,mefb", "--out", out, "-q")
    assert code in (0, None), err
    document = json.loads((out / "results.json").read_text())
    assert document["methods"] == ["ADF", "HMSD_GF", "average", "max@steps=1"]
    assert [r["suite"] for r in document["rankings"]] == ["default", "mefb"]
    for ranking in document["rankings"]:
        images = {m["method"]: m["images"] for m in ranking["methods"]}
        assert images == {"ADF": 3, "HMSD_GF": 2, "average": 3, "max@steps=1": 3}
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert {r["suite"] for r in rows} == {"default", "mefb"}
    assert len([r for r in rows if r["method"] == "average"]) == 3 * (10 + 2)


def test_score_on_the_vifb_calibration_reproduces_the_published_values(tmp_path, monkeypatch, capsys):
    calibration = BENCHMARKS / "vifb-calibration"
    if not calibration.is_dir():
        pytest.skip(f"{calibration} not present")
    fused = tmp_path / "fused"
    fused.mkdir()
    chosen = [("carLight", "ADF"), ("carLight", "HMSD_GF"), ("snow", "LP_SR"), ("snow", "ADF")]
    for set_name, method in chosen:
        shutil.copy(calibration / "fused" / f"{set_name}_{method}.jpg", fused)
    out = tmp_path / "out"
    code, printed, err = run_cli(monkeypatch, capsys, "score", calibration / "infrared_visible", fused,
                                 "--metrics", "vifb", "--out", out, "-q")
    assert code in (0, None), err
    assert "set infrared_visible/fight: no fused image, not scored" in err
    published_names = {"AG": "Avg_gradient", "CE": "Cross_entropy", "EI": "Edge_intensity", "EN": "Entropy",
                       "MI": "Mutinf", "PSNR": "Psnr", "Qabf": "Qabf", "Qcb": "Qcb", "Qcv": "Qcv", "RMSE": "Rmse",
                       "SF": "Spatial_frequency", "SSIM": "Ssim", "SD": "Variance"}
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == len(chosen) * 13
    for row in rows:
        text = (calibration / "published" / f"{row['set']}_{row['method']}_{published_names[row['metric']]}.txt")
        published = float(text.read_text().split()[0])
        # The published files keep 5 significant digits.
        assert float(row["value"]) == pytest.approx(published, rel=1e-3), row


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("case", ["no-match", "size", "suite", "not-a-folder", "clash", "weights-alone", "twice",
                                  "sources-differ", "out-is-a-file", "no-sets"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tree, tmp_path, monkeypatch, capsys, rng):
    sets, fused = tree
    out = tmp_path / "out"
    arguments = ["score", sets, fused, "--out", out, "-q"]
    expected = {
        "no-match": f"{tmp_path / 'elsewhere'}: no fused image of these sets (man, man_walk, snow); name them "
                    "SET_METHOD.ext, as VIFB and MFIFB store them",
        "size": f"{fused / 'snow_ADF.png'}: 40x48, but set sets/snow's sources are 48x40; "
                "score fused images at their sources' size",
        "suite": "--metrics: unknown suite 'vif'; use one or more of default, vifb, mefb, comma-separated, or all",
        "not-a-folder": f"{fused / 'man_ADF.png'}: not a folder; give the folder of fused images (name them "
                        "SET_METHOD.ext, as VIFB and MFIFB store them)",
        "clash": f"--methods ADF: {fused} already holds fused images of a method named ADF; rename those files "
                 "or leave ADF out of --methods",
        "weights-alone": "--weights applies to the semfuse methods of --methods, and none is given; add --methods "
                         "(e.g. --methods max) or drop it",
        "twice": f"{fused / 'snow_ADF.png'}: snow_ADF.bmp is also set sets/snow's ADF; keep one of them",
        "sources-differ": "sets/snow: sizes differ (48x40, 40x48); add --match-size to resize each set to its "
                          "smallest image",
        "out-is-a-file": f"--out {fused / 'notes.txt'}: is a file, not a folder; name a folder that can be written "
                         "with --out",
        "no-sets": f"{fused / 'notes.txt'}: give a folder of sets or a .csv file listing them",
    }[case]
    if case == "no-match":
        write(tmp_path / "elsewhere" / "other_ADF.png", rng.integers(0, 256, SHAPE, dtype=np.uint8))
        arguments[2] = tmp_path / "elsewhere"
    elif case == "size":
        write(fused / "snow_ADF.png", rng.integers(0, 256, SHAPE[::-1], dtype=np.uint8))
    elif case == "suite":
        arguments += ["--metrics", "default,vif"]
    elif case == "not-a-folder":
        arguments[2] = fused / "man_ADF.png"
    elif case == "clash":
        arguments += ["--methods", "average,ADF"]
    elif case == "weights-alone":
        arguments += ["--weights", tmp_path / "weights.pt"]
    elif case == "twice":
        write(fused / "snow_ADF.bmp", rng.integers(0, 256, SHAPE, dtype=np.uint8))
    elif case == "sources-differ":
        write(sets / "snow_Vis.png", rng.integers(0, 256, SHAPE[::-1], dtype=np.uint8))
    elif case == "out-is-a-file":
        out = fused / "notes.txt"
        arguments[4] = out
    elif case == "no-sets":
        arguments[1] = fused / "notes.txt"
    before = snapshot(sets, fused, tmp_path / "elsewhere")
    code, printed, err = run_cli(monkeypatch, capsys, *arguments)
    assert code == 2
    assert err.strip().splitlines() == [f"semfuse-rt: error: {expected}"]
    assert snapshot(sets, fused, tmp_path / "elsewhere") == before  # inputs intact
    assert case == "out-is-a-file" or not out.exists()  # nothing written
