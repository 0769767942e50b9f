"""Benchmarks 1, 2 and 4 of issue 4: the embedding stage against torch.nn.EmbeddingBag.

Usage (from the repository root)::

    .venv/bin/python bench/embedding_stage.py            # full run, ~15 min, both D
    .venv/bin/python bench/embedding_stage.py --quick    # ~1 min sanity run, D=16 only

Writes ``bench/reports/embedding_stage.{md,png,json}`` (``embedding_stage-quick.*`` with
``--quick``). Each D runs in two worker processes (``embedding_worker.py``): one where torch
allocates with transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``, the strongest baseline, plus
MEM-REC with float16 token tables, our full-table kernel and the gather rates), then one with
torch's default allocator. Each
worker measures MEM-REC itself, so every ratio comes from one process. A D whose full tables do
not fit in the memory available is skipped and the report says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import embedding_report
from criteo import KAGGLE_CARDINALITIES
from machine import describe

from memrec_infer.kernels._alloc import stream_min_bytes

HERE = Path(__file__).resolve().parent
PACKAGES = ("memrec-infer", "numpy", "numba", "torch", "onnxruntime", "llvmlite")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _words(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` replaces the defaults by a one-minute run."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dims", type=_ints, default=[16, 128])
    p.add_argument("--batches", type=_ints, default=[1, 16, 256, 1024, 4096, 16384])
    p.add_argument("--threads", type=_ints, default=[1, 2])
    p.add_argument("--dists", type=_words, default=["zipf", "uniform"])
    p.add_argument("--hots", type=_words, default=["one", "multi"])
    p.add_argument("--seconds", type=float, default=0.3, help="per contender and configuration")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--k", type=int, default=2, help="token hashes per id")
    p.add_argument("--k-w", type=int, default=2, help="weight hashes per id")
    p.add_argument("--budget-mib", type=float, default=8.0, help="all MEM-REC tables together")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-default-torch", action="store_true", help="skip the no-THP worker")
    p.add_argument("--no-half", action="store_true", help="skip MEM-REC with float16 token tables")
    p.add_argument("--quick", action="store_true", help="D=16, B in {1, 1024}, short timings")
    p.add_argument("--out", type=Path, default=None, help="report path without suffix")
    p.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="re-render the markdown and PNG from a run's raw JSON instead of measuring",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.dims, args.batches, args.dists = [16], [1, 1024], ["zipf"]
        args.seconds, args.rounds = 0.05, 3
    if args.out is None:
        args.out = HERE / "reports" / ("embedding_stage-quick" if args.quick else "embedding_stage")
    return args


def run_worker(settings: dict, thp: bool) -> dict:
    """One worker process; its JSON result."""
    env = dict(os.environ)
    if thp:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    else:
        env.pop("THP_MEM_ALLOC_ENABLE", None)
    with tempfile.TemporaryDirectory() as tmp:
        s_path, r_path = Path(tmp, "settings.json"), Path(tmp, "result.json")
        s_path.write_text(json.dumps(settings))
        proc = subprocess.run(
            [sys.executable, str(HERE / "embedding_worker.py"), str(s_path), str(r_path)], env=env
        )
        if proc.returncode != 0:
            return {
                "dim": settings["dim"],
                "thp": thp,
                "skipped": f"worker failed ({proc.returncode})",
            }
        return json.loads(r_path.read_text())


def main(argv: list[str] | None = None) -> None:
    """Run the workers, write the report (markdown, PNG and the raw JSON)."""
    args = parse_args(argv)
    if args.from_json is not None:
        raw = json.loads(args.from_json.read_text())
        out = args.from_json.with_suffix("")
        settings = {**raw["settings"], "png": out.with_suffix(".png").name}
        out.with_suffix(".md").write_text(
            embedding_report.markdown(raw["machine"], settings, raw["workers"])
        )
        embedding_report.plot(raw["workers"], str(out.with_suffix(".png")))
        print(f"wrote {out.with_suffix('.md')} and .png")
        return
    info = describe(PACKAGES)
    base = {
        "cards": list(KAGGLE_CARDINALITIES),
        "budget_bytes": int(args.budget_mib * 2**20),
        "k": args.k,
        "k_w": args.k_w,
        "seed": args.seed,
        "dists": args.dists,
        "hots": args.hots,
        "batches": args.batches,
        "threads": args.threads,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "gather_bags": max(args.batches) * len(KAGGLE_CARDINALITIES),
        "stream_min_bytes_by_dim": {str(d): stream_min_bytes(4 * d) for d in args.dims},
    }
    workers = []
    for dim in args.dims:
        settings = {**base, "dim": dim}
        # float16 token tables are timed in the strongest baseline's worker only.
        first = {**settings, "full_kernel": True, "gather": True, "half": not args.no_half}
        workers.append(run_worker(first, thp=True))
        if not args.no_default_torch:
            rest = {**settings, "full_kernel": False, "gather": False, "half": False}
            workers.append(run_worker(rest, False))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = embedding_report.markdown(
        info, {**base, "png": args.out.with_suffix(".png").name}, workers
    )
    args.out.with_suffix(".md").write_text(report)
    args.out.with_suffix(".json").write_text(
        json.dumps({"machine": info, "settings": base, "workers": workers}, indent=1)
    )
    embedding_report.plot(workers, str(args.out.with_suffix(".png")))
    goals = report.split("## Goals", 1)[1].split("##", 1)[0].strip()
    print(goals)
    print(f"wrote {args.out.with_suffix('.md')} and .png/.json")


if __name__ == "__main__":
    main()
