"""Batch scoring benchmark: end-to-end rows/s vs compute alone, and peak RSS at 1x and 4x input.

Generates (seeded) a Criteo-shaped Parquet file: 13 dense columns ``int_0..int_12`` (int32,
log-normal counts, 10% nulls) and 26 categorical ``cat_0..cat_25`` (int64 ids, Zipf-like,
s=1.05, with the Criteo Kaggle cardinalities as used by facebookresearch/dlrm; see
``criteo.py``). Builds a MEM-REC DLRM for those shapes with the DLRM Kaggle architecture
(D=16, bottom 512-256-64-16, top 512-256-1, dot interaction) and **random weights** (the
benchmark measures speed and memory, not accuracy), converts it, then runs, each in its own
process so peak RSS is per run:

- ``compute``: the first ``--compute-rows`` rows, already in memory as Arrow tables of
  ``--batch-size`` rows, through ``Model.predict`` (prep + kernels + ONNX Runtime);
- ``e2e 1x``: ``score_parquet`` on the file (read, decode, score, write Parquet);
- ``e2e 4x``: the same file given four times as input (4x the rows, same bytes on disk).

The ratio e2e / compute rows/s shows how much of the I/O the read-ahead thread hides (goal
>= 0.8); peak RSS at 1x vs 4x shows whether memory grows with the input (goal: no, < 1 GB).

Usage::

    python bench/score_bench.py                 # 5,000,000 rows, report on stdout
    python bench/score_bench.py --rows 200000 --report bench/reports/score.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from criteo import KAGGLE_CARDINALITIES, KAGGLE_DIM, draw_rows, kaggle_dlrm_config

from memrec_infer.scoring import DEFAULT_BATCH_SIZE

N_DENSE = 13
# MEM-REC tables of every feature together: small enough for the last-level cache.
TABLE_BUDGET = 8 << 20
GEN_CHUNK = 500_000
DENSE_NULLS = 0.10


def generate(path: Path, rows: int, seed: int) -> None:
    """Write the Criteo-shaped Parquet file, ``GEN_CHUNK`` rows at a time."""
    rng = np.random.default_rng(seed)
    fields = [(f"int_{i}", pa.int32()) for i in range(N_DENSE)]
    fields += [(f"cat_{j}", pa.int64()) for j in range(len(KAGGLE_CARDINALITIES))]
    schema = pa.schema(fields)
    with pq.ParquetWriter(path, schema) as w:
        for start in range(0, rows, GEN_CHUNK):
            n = min(GEN_CHUNK, rows - start)
            cols = []
            for _ in range(N_DENSE):
                x = np.floor(rng.lognormal(1.5, 1.5, n)).astype(np.int32)
                cols.append(pa.array(x, mask=rng.random(n) < DENSE_NULLS))
            for card in KAGGLE_CARDINALITIES:
                cols.append(pa.array(draw_rows(rng, card, n, "zipf")))
            w.write_table(pa.Table.from_arrays(cols, schema=schema), row_group_size=131072)


def build_model(directory: Path, seed: int) -> Path:
    """A MEM-REC DLRM checkpoint (random weights) for the Criteo shapes, converted."""
    import torch

    from memrec_infer.convert import convert
    from memrec_infer.models.checkpoint import save_checkpoint
    from memrec_infer.models.dlrm import build_dlrm

    config = kaggle_dlrm_config(
        "memrec",
        seed,
        TABLE_BUDGET,
        [f"int_{i}" for i in range(N_DENSE)],
        [f"cat_{j}" for j in range(len(KAGGLE_CARDINALITIES))],
        "random weights: score_bench measures speed and memory only",
    )
    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    save_checkpoint(build_dlrm(config), config, directory / "model.pt")
    convert(directory / "model.pt", directory / "model")
    return directory / "model"


def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args: argparse.Namespace) -> dict:
    """One measurement in this process; returns rows, seconds and peak RSS."""
    from memrec_infer.runtime import load
    from memrec_infer.scoring import score_parquet

    model = load(args.model, threads=args.threads)
    pf = pq.ParquetFile(args.input)
    first = next(pf.iter_batches(batch_size=args.batch_size))
    model.predict(first)  # JIT cache load and ORT warm-up, outside the timed region
    if args.worker == "compute":
        batches, have = [], 0
        for b in pf.iter_batches(batch_size=args.batch_size):
            batches.append(pa.Table.from_batches([b]))
            have += b.num_rows
            if have >= args.compute_rows:
                break
        t0 = time.perf_counter()
        for b in batches:
            model.predict(b)
        seconds = time.perf_counter() - t0
        rows = have
    else:
        out = Path(args.out)
        t0 = time.perf_counter()
        summary = score_parquet(
            model, [args.input] * args.copies, out, batch_size=args.batch_size, force=True
        )
        seconds = time.perf_counter() - t0
        rows = summary.rows
        out.unlink()
    return {"rows": rows, "seconds": seconds, "peak_rss_mib": peak_rss_mib()}


def run_worker(kind: str, common: list[str], **extra: object) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, *common]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"worker {kind} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def report(info: dict, args: argparse.Namespace, results: dict, file_mib: float) -> str:
    comp, e1, e4 = results["compute"], results["e2e_1x"], results["e2e_4x"]
    rate = {k: v["rows"] / v["seconds"] for k, v in results.items()}
    lines = [
        "# Batch scoring: `memrec-infer score` on Criteo-shaped Parquet",
        "",
        machine.header_markdown(info),
        f"- **Input**: {args.rows:,} generated rows (seed {args.seed}), {file_mib:,.0f} MiB of "
        "Parquet: 13 int32 dense columns (10% nulls), 26 int64 categorical columns with the "
        "Criteo Kaggle cardinalities of facebookresearch/dlrm, Zipf-like ids (s=1.05)",
        f"- **Model**: MEM-REC DLRM, D={KAGGLE_DIM}, bottom 512-256-64-16, top 512-256-1, dot "
        f"interaction, tables within {TABLE_BUDGET >> 20} MiB; random weights (speed and memory "
        "only); converted with `memrec_infer.convert`",
        f"- **Settings**: --threads {args.threads}, --batch-size {args.batch_size:,}; each "
        "measurement in its own process after one warm-up batch",
        "",
        "| run | rows | seconds | rows/s | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = {
        "compute": f"compute alone (first {comp['rows']:,} rows in memory, `Model.predict`)",
        "e2e_1x": "end to end, 1x (`score_parquet`, read + score + write)",
        "e2e_4x": "end to end, 4x (same file given 4 times)",
    }
    for k, v in results.items():
        lines.append(
            f"| {labels[k]} | {v['rows']:,} | {v['seconds']:.2f} | {rate[k]:,.0f} | "
            f"{v['peak_rss_mib']:,.0f} |"
        )
    lines += [
        "",
        f"- **I/O overlap**: end-to-end / compute rows/s = {rate['e2e_1x'] / rate['compute']:.2f}"
        f" at 1x, {rate['e2e_4x'] / rate['compute']:.2f} at 4x (goal >= 0.8)",
        f"- **Memory vs input size**: peak RSS 4x / 1x = "
        f"{e4['peak_rss_mib'] / e1['peak_rss_mib']:.2f} ({e1['peak_rss_mib']:,.0f} -> "
        f"{e4['peak_rss_mib']:,.0f} MiB; goal: flat, < 1 GB)",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=5_000_000, help="rows of the 1x input")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--compute-rows", type=int, default=1 << 20, help="rows held in memory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="where data and model go (default: a temp dir, removed)")
    p.add_argument("--report", help="also write the markdown report here")
    p.add_argument("--worker", choices=("compute", "e2e"), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--copies", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    info = machine.describe(("memrec-infer", "numpy", "numba", "onnxruntime", "pyarrow", "torch"))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="score_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = work / "criteo.parquet"
        if not data.exists():
            print(f"generating {args.rows:,} rows -> {data}", file=sys.stderr)
            generate(data, args.rows, args.seed)
        model = work / "model"
        if not model.exists():
            print("building and converting the model", file=sys.stderr)
            build_model(work, args.seed)
        common = ["--model", str(model), "--input", str(data), "--threads", str(args.threads),
                  "--batch-size", str(args.batch_size)]  # fmt: skip
        results = {}
        print("compute alone", file=sys.stderr)
        results["compute"] = run_worker("compute", common, compute_rows=args.compute_rows)
        for copies in (1, 4):
            print(f"end to end, {copies}x", file=sys.stderr)
            results[f"e2e_{copies}x"] = run_worker(
                "e2e", common, copies=copies, out=work / "scores.parquet"
            )
        text = report(info, args, results, data.stat().st_size / 2**20)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(text)
    if args.report:
        Path(args.report).write_text(text)


if __name__ == "__main__":
    main()
