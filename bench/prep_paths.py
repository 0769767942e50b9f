"""Feature prep's one-call path (``memrec_infer.fused_prep``) against its baseline, the
per-column path, side by side in one process.

The flights model's prep (9 dense, 7 categorical columns, 3 crosses), built from the manifest
of ``scripts/demo.sh``'s converted model, on real flights rows: an Arrow table (what ``score``
and ``bench`` hand over) and a dict of NumPy columns (the flights dense columns; the
categorical ones are strings). The per-column path is the baseline of both. Every call
prepares a batch of its own (a rotation of 64 slices), contenders interleaved.

Usage (from the repository root, after ``bash scripts/demo.sh``)::

    .venv/bin/python bench/prep_paths.py            # -> reports/prep_paths.md (~1 min)
    .venv/bin/python bench/prep_paths.py --model demo/memrec --out bench/reports/prep_paths
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq
from machine import describe, header_markdown
from timing import Rotation, measure, summary

from memrec_infer import fused_prep
from memrec_infer.prep import FeaturePrep

ROOT = Path(__file__).resolve().parents[1]


def per_column(prep: FeaturePrep) -> FeaturePrep:
    """The same prep with the one-call path off (its program is never built)."""
    plain = FeaturePrep(prep.dense, prep.sparse)
    real = fused_prep.FusedPrep.for_schema

    def call(batch):
        fused_prep.FusedPrep.for_schema = classmethod(lambda *a: None)
        try:
            return plain(batch)
        finally:
            fused_prep.FusedPrep.for_schema = real

    return call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "demo" / "memrec"))
    ap.add_argument("--batches", default="1,16,256,1024,4096")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "reports" / "prep_paths"))
    args = ap.parse_args()
    manifest = json.loads((Path(args.model) / "manifest.json").read_text())
    prep = FeaturePrep(manifest["dense"], manifest["sparse"])
    table = pq.read_table(ROOT / "data" / "flights.parquet", columns=prep.columns)
    dense_only = FeaturePrep(manifest["dense"], [])
    fused_prep.load_kernel()
    rows = []
    for b in [int(x) for x in args.batches.split(",")]:
        slices = [table.slice(i * b, b).combine_chunks() for i in range(64)]
        dicts = [{c: s.column(c).to_numpy() for c in dense_only.columns} for s in slices]
        contenders = {}
        for name, fn, inputs in (
            ("arrow one-call", prep, slices),
            ("arrow per-column", per_column(prep), slices),
            ("numpy one-call", dense_only, dicts),
            ("numpy per-column", per_column(dense_only), dicts),
        ):
            fn(inputs[0])  # compiles or loads what it needs, untimed
            contenders[name] = Rotation([partial(lambda f, x: partial(f, x), fn, x)
                                         for x in inputs])  # fmt: skip
        res = {k: summary(v, b)["p50_us"] for k, v in measure(contenders, args.seconds).items()}
        rows.append((b, res))
        print(b, {k: round(v, 1) for k, v in res.items()}, flush=True)
    info = describe(("numpy", "numba", "pyarrow"))
    lines = [
        "# Benchmark: feature prep, one-call path vs per-column path",
        "",
        header_markdown(info),
        "",
        "p50 microseconds per batch, measured side by side in one process; *ratio* = "
        "per-column / one-call. Arrow: the flights model's 16 columns as a table. NumPy: its "
        "9 dense columns as a dict of arrays (flights' categorical columns are strings, which "
        "a dict can only hold as Python objects).",
        "",
        "| B | Arrow one-call | Arrow per-column | ratio | NumPy one-call | NumPy per-column "
        "| ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for b, r in rows:
        lines.append(
            f"| {b} | {r['arrow one-call']:.1f} | {r['arrow per-column']:.1f} | "
            f"**{r['arrow per-column'] / r['arrow one-call']:.2f}x** | "
            f"{r['numpy one-call']:.1f} | {r['numpy per-column']:.1f} | "
            f"**{r['numpy per-column'] / r['numpy one-call']:.2f}x** |"
        )
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
