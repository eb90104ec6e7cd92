"""--match-size on `eval` and `score`: sets whose sources differ only in resolution
(RoadScene) are resized to their smallest image; without it they stop the run at once."""
import csv
import json

import cv2
import numpy as np
import pytest

from conftest import run_main, snapshot, the_one_error_line
from semfuse_rt.engine.evaluation.set_sizes import match_sizes, smallest_size

SMALL, LARGE = (30, 40), (64, 80)  # (height, width): a 40x30 grey "infrared", an 80x64 colour "visible"
UNEVEN = "road/a: sizes differ (40x30, 80x64), as in 2 sets; add --match-size to resize each set to its smallest image"


def write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture
def bench(tmp_path, rng):
    """A benchmark folder with category `road`: sets a and b pair a grey 40x30 image with a
    colour 80x64 one; set c is one size."""
    road = tmp_path / "bench" / "road"
    for name in ("a", "b"):
        write(road / f"{name}_IR.png", rng.integers(0, 256, SMALL, dtype=np.uint8))
        write(road / f"{name}_Vis.png", rng.integers(0, 256, (*LARGE, 3), dtype=np.uint8))
    for label in ("IR", "Vis"):
        write(road / f"c_{label}.png", rng.integers(0, 256, SMALL, dtype=np.uint8))
    return tmp_path / "bench"


def test_match_sizes_takes_the_fewest_pixels_first_of_equals_by_area_averaging(rng):
    tall, wide = np.zeros((20, 10), np.uint8), np.zeros((10, 20), np.uint8)
    assert smallest_size([(10, 20), (20, 10)]) == (10, 20)  # equal pixel counts: the first
    assert smallest_size([(50, 50), (100, 10)]) == (100, 10)  # fewest pixels, not the shorter side
    matched = match_sizes([tall, wide])
    assert matched[0] is tall and matched[1].shape == (20, 10)
    grey = rng.integers(0, 256, SMALL, dtype=np.uint8)
    colour = rng.integers(0, 65536, (*LARGE, 3), dtype=np.uint16)
    out_grey, out_colour = match_sizes([colour, grey])
    assert out_colour is grey
    assert out_grey.dtype == np.uint16 and out_grey.shape == (*SMALL, 3)
    assert np.array_equal(out_grey, cv2.resize(colour, SMALL[::-1], interpolation=cv2.INTER_AREA))


def test_eval_without_match_size_stops_before_reading_any_pixel(bench, tmp_path, monkeypatch, capsys):
    import semfuse_rt.engine.evaluation.evaluation as evaluation

    def no_decoding(path, *args, **kwargs):
        raise AssertionError(f"{path} decoded before the sizes were checked")

    monkeypatch.setattr(evaluation, "load_image", no_decoding)
    out = tmp_path / "out"
    before = snapshot(bench)
    code, _, err = run_main(monkeypatch, capsys, "eval", bench, "--methods", "average", "--out", out,
                            "--no-retention", "-q")
    assert the_one_error_line(code, err) == f"semfuse-rt: error: {UNEVEN}"
    assert not out.exists() and snapshot(bench) == before


def test_eval_with_match_size_fuses_at_the_smallest_size_and_records_it(bench, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    before = snapshot(bench)
    code, printed, err = run_main(monkeypatch, capsys, "eval", bench, "--methods", "average", "--out", out,
                                  "--no-retention", "--no-grids", "--save-fused", "--match-size", "-q")
    assert code in (0, None), err
    assert snapshot(bench) == before
    document = json.loads((out / "results.json").read_text())
    assert document["settings"]["match_size"] is True
    assert document["settings"]["command"] == (f"semfuse-rt eval {bench} --methods average --out {out} "
                                               "--match-size")
    assert [(s["name"], s["width"], s["height"]) for s in document["sets"]] == [("a", 40, 30), ("b", 40, 30),
                                                                                 ("c", 40, 30)]
    assert cv2.imread(str(out / "fused" / "road" / "a--average.png"), cv2.IMREAD_UNCHANGED).shape[:2] == SMALL
    markdown = (out / "results.md").read_text()
    assert "sizes matched to each set's smallest image" in markdown and "--match-size" in markdown
    # --max-size shrinks what --match-size matched.
    code, _, err = run_main(monkeypatch, capsys, "eval", bench, "--methods", "average", "--out", out,
                            "--no-retention", "--no-grids", "--match-size", "--max-size", "20", "-q")
    assert code in (0, None), err
    document = json.loads((out / "results.json").read_text())
    assert {(s["width"], s["height"]) for s in document["sets"]} == {(20, 15)}
    assert document["settings"]["max_size"] == 20 and "--match-size" in document["settings"]["command"]


@pytest.fixture
def fused(tmp_path, rng):
    """Fused images of sets a and b at the matched size, 40x30."""
    folder = tmp_path / "fused"
    for name in ("a", "b"):
        write(folder / "road" / f"{name}_ADF.png", rng.integers(0, 256, SMALL, dtype=np.uint8))
    return folder


def test_score_with_match_size_scores_fused_images_at_the_matched_size(bench, fused, tmp_path, monkeypatch,
                                                                       capsys):
    out = tmp_path / "out"
    code, _, err = run_main(monkeypatch, capsys, "score", bench, fused, "--methods", "average", "--match-size",
                            "--out", out, "-q")
    assert code in (0, None), err
    document = json.loads((out / "results.json").read_text())
    assert document["match_size"] is True and "--match-size" in document["command"]
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert {(r["set"], r["method"]) for r in rows} == {(s, m) for s in ("a", "b") for m in ("ADF", "average")}
    assert "sizes matched to each set's smallest image" in (out / "results.md").read_text()


def test_score_without_match_size_or_at_another_size_is_one_line(bench, fused, tmp_path, monkeypatch, capsys, rng):
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "score", bench, fused, "--out", out, "-q")
    assert the_one_error_line(code, err) == f"semfuse-rt: error: {UNEVEN}"
    assert snapshot(tmp_path) == before and not out.exists()
    # A fused image at the larger source's size is someone else's result: never resized.
    large = write(fused / "road" / "b_ADF.png", rng.integers(0, 256, LARGE, dtype=np.uint8))
    before = snapshot(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "score", bench, fused, "--match-size", "--out", out, "-q")
    assert the_one_error_line(code, err) == (
        f"semfuse-rt: error: {large}: 80x64, but --match-size brings set road/b's sources to 40x30, its smallest "
        "image's size; score fused images made at that size (they are not resized)")
    assert snapshot(tmp_path) == before and not out.exists()
