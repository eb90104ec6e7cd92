"""Is one method's semantic retention really above another's? Paired counts and exact sign
tests, per category, from an `eval --save-fused` run.

    semfuse-rt eval ../shared/datasets --methods max,max@preset=paper --judges all --save-fused -o OUT
    python benchmarks/retention_pairs.py OUT max max@preset=paper
    python benchmarks/retention_pairs.py OUT max max@preset=paper --sets benchmarks/heldout-heldout.csv

R5 counts, for each input and judge, whether the input's top-1 class is in the fused image's
top 5. Two methods fuse the same inputs, so their judgements pair up: only the pairs where
one keeps the class and the other loses it say which is better (McNemar's test, exact:
a two-sided sign test on those discordant pairs). The judges see the same images and are of
one family, so their judgements are not independent; the second test counts each input
once, kept when at least half of the judges keep it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def judgements(out: Path, document: dict, label: str, judges, chosen: set | None = None) -> dict:
    """{(category, set, input, judge): kept in the top 5} for one method of the run whose
    results.json is `document`; only the (category, set) pairs in `chosen`, where given."""
    from semfuse_rt.engine.semantic.cam import semantic_retention
    from semfuse_rt.engine.evaluation.evaluation import fused_image_path
    from semfuse_rt.engine.io.images import load_image

    kept = {}
    for fusion_set in document["sets"]:
        category, name = fusion_set["category"], fusion_set["name"]
        if chosen is not None and (category, name) not in chosen:
            continue
        fused_path = fused_image_path(out / "fused", category, name, label)
        if not fused_path.is_file():
            raise SystemExit(f"{fused_path}: missing (run eval with --save-fused and this method)")
        inputs = [load_image(path) for path in fusion_set["sources"]]
        fused = load_image(fused_path)
        for judge in judges:
            for row in semantic_retention(inputs, fused, judge):
                kept[(category, name, row.input_index, judge.name)] = row.fused_rank <= 5
    return kept


def markdown(rows: list[dict], a: str, b: str) -> str:
    lines = [f"| category (judgements / inputs) | R5 `{a}` | R5 `{b}` | judgements kept by one only "
             f"(`{a}` / `{b}`) | p | inputs kept by one only (`{a}` / `{b}`) | p |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['category']} ({r['judgements']} / {r['inputs']}) | {r['r5_a']:.2f} | {r['r5_b']:.2f} "
                     f"| {r['a_only']} / {r['b_only']} | {r['p']:.2f} | {r['a_inputs']} / {r['b_inputs']} "
                     f"| {r['p_inputs']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="an eval --save-fused output folder")
    parser.add_argument("a", help="method label, as in the eval's --methods")
    parser.add_argument("b", help="the method to compare it with")
    parser.add_argument("--judges", default=None, help="default: the run's own judges")
    parser.add_argument("--sets", type=Path, default=None,
                        help="a sets CSV (benchmarks/heldout-heldout.csv): compare only the sets it names")
    args = parser.parse_args(argv)

    from semfuse_rt.errors import SemfuseError

    try:
        print(compare(args.out, args.a, args.b, args.judges, args.sets))
    except SemfuseError as error:
        raise SystemExit(f"error: {error}") from None
    return 0


def compare(out: Path, a: str, b: str, judges: str | None, sets: Path | None) -> str:
    from semfuse_rt.engine.semantic.classifier import efficientnet_classifier
    from semfuse_rt.engine.evaluation.datasets import read_sets_csv
    from semfuse_rt.engine.evaluation.retention_judges import compare_paired, parse_judges
    from semfuse_rt.errors import SemfuseError

    results = out / "results.json"
    if not results.is_file():
        raise SemfuseError(f"{results}: missing (give the --out folder of an eval --save-fused run)")
    document = json.loads(results.read_text())
    chosen = None
    if sets is not None:
        chosen = {(s.category, s.name) for s in read_sets_csv(sets).sets}
        if not chosen & {(s["category"], s["name"]) for s in document["sets"]}:
            raise SemfuseError(f"{sets}: names none of the sets of {results}")
    names = parse_judges(judges or ",".join(document["settings"].get("judges", ["lite0"])))
    classifiers = [efficientnet_classifier(name) for name in names]
    rows = compare_paired(judgements(out, document, a, classifiers, chosen),
                          judgements(out, document, b, classifiers, chosen), len(classifiers))
    return f"judges: {', '.join(names)}\n{markdown(rows, a, b)}"

if __name__ == "__main__":
    sys.exit(main())
