#!/usr/bin/env bash
# The main job on the bundled sample, from a fresh clone: set up ./.venv, train a MEM-REC DLRM
# and its full-table baseline on flights (months 1-10), convert both, score all 327k rows with
# the engine, print test AUC (months 11-12), table sizes and latency. A few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
out=${DEMO_DIR:-demo}
mkdir -p "$out"

features=(--label delayed --split "month>=11"
  --dense day,sched_dep_time,sched_arr_time,distance,hour,minute,plane_year,engines,seats
  --sparse carrier,flight,tailnum,origin,dest,manufacturer,plane_model
  --sparse "carrier*flight,tailnum*dest,origin*dest*hour")

echo "== train: MEM-REC tables, then the full-table baseline (torch, months 1-10)"
memrec-infer train data/flights.parquet "${features[@]}" --embedding memrec -o "$out/memrec.pt" --force
memrec-infer train data/flights.parquet "${features[@]}" --embedding full -o "$out/full.pt" --force

echo "== convert (no torch from here on)"
memrec-infer convert "$out/memrec.pt" -o "$out/memrec" --force
memrec-infer convert "$out/full.pt" -o "$out/full" --force
memrec-infer info "$out/memrec"

echo "== score every row with each model"
memrec-infer score "$out/memrec" data/flights.parquet -o "$out/memrec-scores.parquet" \
  --keep month --keep delayed --force
memrec-infer score "$out/full" data/flights.parquet -o "$out/full-scores.parquet" \
  --keep month --keep delayed --force

echo "== test AUC (months 11-12) and sizes"
python - "$out" <<'PY'
import json, sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from memrec_infer.models.train import auc

out = Path(sys.argv[1])
for name in ("memrec", "full"):
    t = pq.read_table(out / f"{name}-scores.parquet")
    t = t.filter(pc.greater_equal(t["month"], 11))
    a = auc(t["delayed"].to_numpy(), t["score"].to_numpy())
    manifest = json.loads((out / name / "manifest.json").read_text())
    tables = manifest["files"]["tokens.npy"]["bytes"] + manifest["files"]["weights.npy"]["bytes"]
    print(f"{name:>6}: test AUC {a:.4f} on {t.num_rows:,} rows; embedding tables {tables:,} bytes")
PY

echo "== latency: MEM-REC engine, full-table model as the baseline, real rows"
memrec-infer bench "$out/memrec" --baseline "$out/full" --input data/flights.parquet \
  --batch-sizes 1,1024 --seconds 0.5
