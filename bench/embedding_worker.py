"""One process of ``bench/embedding_stage.py``: every contender at one D, one torch allocator.

Run by the orchestrator as ``python bench/embedding_worker.py SETTINGS.json RESULT.json``; the
orchestrator sets ``THP_MEM_ALLOC_ENABLE`` in this process's environment, because torch reads it
once at start-up. Everything compared in one ratio is measured here, interleaved
(``timing.measure``), on the same rotation of distinct batches (``criteo.make_rotation``: new
ids on every call, as in serving):

- ``memrec``: :meth:`BagPlan.lookup` over 26 MEM-REC tables, output ``[B, F, D]`` preallocated;
- ``memrec_half``: the same tables with their token rows stored as float16 (``convert
  --token-dtype float16``): same hashes and weights, half the token bytes;
- ``torch_tables``: one ``torch.nn.EmbeddingBag(mode="sum")`` per table, as DLRM does;
- ``torch_fused``: one ``EmbeddingBag`` over the 26 tables stacked, sample-major bags
  (its output ``[B * F, D]`` is ``[B, F, D]``);
- ``full_kernel``: our :func:`full_bag_rows` on the same stacked table and bags, sample-major
  (as ``torch_fused``);
- ``full_kernel_tables``: the same, the bags table-major in one call (as ``torch_tables``, whose
  outputs stacked are its ``[F * B, D]``).

Both torch layouts share one weight tensor (the per-table modules hold views of it), and our
full-table kernel reads the same memory, so all three full-table contenders see the same pages.
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import partial

import numba
import numpy as np
from criteo import Bags, make_rotation, memrec_sizes
from embedding_report import TORCH
from gather_rate import gather_call, resident_table, write_call
from machine import cache_bytes, meminfo_bytes
from timing import Rotation, measure, summary

from memrec_infer.kernels._alloc import empty_aligned
from memrec_infer.kernels.bags import BagPlan, FeatureTable, full_bag_rows, make_plan
from memrec_infer.kernels.hashing import draw_seeds

# The L2-resident reference table: half of a core's L2 (Zen 3: 512 KiB, Zen 4: 1 MiB).
L2_TABLE_BYTES = (cache_bytes(2) or 1 << 20) // 2
# Headroom left free besides the full tables: batches, outputs, torch's own allocations.
_HEADROOM = 3 * 2**30


def memrec_plan(settings: dict, rng: np.random.Generator) -> tuple[BagPlan, dict]:
    """26 MEM-REC tables sized by water-filling the token budget (``criteo.memrec_sizes``)."""
    cards = tuple(settings["cards"])
    dim = settings["dim"]
    sizes = memrec_sizes(dim, settings["budget_bytes"], settings["k"], settings["k_w"], cards)
    tokens = (rng.standard_normal((sum(sizes.m), dim), dtype=np.float32) * 0.05).astype(np.float32)
    weights = rng.random(sum(sizes.m_w) * sizes.k, dtype=np.float32)
    feats = []
    toff = woff = 0
    for m, mw in zip(sizes.m, sizes.m_w, strict=True):
        feats.append(
            FeatureTable(
                kind="memrec",
                token_offset=toff,
                rows=m,
                token_seeds=draw_seeds(rng, sizes.k),
                weight_offset=woff,
                weight_rows=mw,
                weight_cols=sizes.k,
                weight_seeds=draw_seeds(rng, sizes.k_w),
            )
        )
        toff += m
        woff += mw * sizes.k
    # Huge pages, as the engine's own plans (memrec_infer.runtime.Model) have them.
    plan = make_plan(feats, tokens, weights, np.zeros(0, dtype=np.int64), huge_pages=True)
    info = {
        "m": list(sizes.m),
        "m_w": list(sizes.m_w),
        "k": sizes.k,
        "k_w": sizes.k_w,
        "token_bytes": sizes.token_bytes,
        "weight_bytes": sizes.weight_bytes,
    }
    return plan, info


def half_plan(plan: BagPlan) -> BagPlan:
    """``plan`` with its token rows rounded to float16 (what ``--token-dtype float16`` serves)."""
    tokens = plan.tokens.astype(np.float16)
    return make_plan(list(plan.features), tokens, plan.weights, plan.vocab, huge_pages=True)


def full_weight(torch, total_rows: int, dim: int, seed: int):
    """The stacked full tables, float32 ``[total_rows, dim]``, filled chunk by chunk."""
    weight = torch.empty((total_rows, dim), dtype=torch.float32)
    arr = weight.numpy()
    rng = np.random.default_rng(seed)
    step = max(1, (256 << 20) // (4 * dim))
    for lo in range(0, total_rows, step):
        chunk = arr[lo : lo + step]
        rng.random(chunk.shape, dtype=np.float32, out=chunk)
    return weight


def contenders(torch, plans, tables, fused, weight_np, batches: list[Bags], full: bool) -> dict:
    """One :class:`timing.Rotation` per contender over ``batches``, preallocated outputs.

    Before each call, untimed, the call's batch is copied into fresh input arrays (tensors for
    torch), as the engine's feature prep writes a batch's ids just before its lookup: the input
    is in cache, the table rows its ids pick are wherever the previous batches left them.
    ``plans``: the MEM-REC plans by contender name (``memrec``, and ``memrec_half`` if run).
    Each output is allocated once and reused by every batch, as the engine reuses its buffers.
    """
    first = batches[0]
    nf = first.offsets.shape[0]
    nb = first.batch
    dim = weight_np.shape[1]

    def rotation(make) -> Rotation:
        return Rotation([partial(make, b) for b in batches])

    def ours(plan, out):
        return rotation(lambda b: partial(plan.lookup, b.rows.copy(), b.offsets.copy(), out))

    def per_table(b: Bags):
        calls = []
        for f in range(nf):
            lo, hi = b.offsets[f, 0], b.offsets[f, -1]
            idx = torch.from_numpy(b.rows[lo:hi].copy())
            offs = torch.from_numpy(b.offsets[f, :-1] - lo)
            calls.append((tables[f], idx, offs))
        return partial(_per_table, calls)

    def torch_fused(b: Bags):
        idx = torch.from_numpy(b.fused_rows.copy())
        return partial(fused, idx, torch.from_numpy(b.fused_offsets[:-1].copy()))

    plan = plans["memrec"]
    # 64-byte aligned outputs, as the engine's own buffers (so that large ones can stream).
    calls = {
        "memrec": ours(plan, plan.empty_output(nb)),
        "torch_tables": rotation(per_table),
        "torch_fused": rotation(torch_fused),
    }
    if "memrec_half" in plans:
        calls["memrec_half"] = ours(plans["memrec_half"], plan.empty_output(nb))
    if full:
        # The floor: only writing an output of the same shape, as the engine writes it.
        calls["write_floor"] = write_call(empty_aligned((nb * nf, dim)))
        out_full = empty_aligned((nb * nf, dim))
        calls["full_kernel"] = rotation(
            lambda b: partial(
                full_bag_rows, b.fused_rows.copy(), b.fused_offsets.copy(), weight_np, out=out_full
            )
        )
        out_tables = empty_aligned((nf * nb, dim))
        calls["full_kernel_tables"] = rotation(
            lambda b: partial(
                full_bag_rows,
                b.table_rows.copy(),
                b.table_offsets.copy(),
                weight_np,
                out=out_tables,
            )
        )
    return calls


def _per_table(per_table: list) -> list:
    # One EmbeddingBag call per table, as DLRM does.
    return [emb(i, o) for emb, i, o in per_table]


def with_fewer_torch_threads(torch, calls: dict, threads: int, settings: dict):
    """``calls`` on ``threads`` threads, plus each torch layout on every fewer thread count.

    Returns ``(contenders, before)`` for :func:`timing.measure`: ``torch_fused@1t`` (say) is
    torch's fused bag on one thread, timed in the same rotation as the rest on ``threads``, and
    ``before`` sets torch's thread count ahead of each block. The strongest baseline may be
    torch on fewer threads (a small batch gains nothing from a parallel launch); measured here,
    its ratio to MEM-REC shares the machine's noise like every other ratio, instead of pairing
    two rotations timed minutes apart.
    """
    timed = dict(calls)
    before = {n: (lambda: torch.set_num_threads(threads)) for n in calls}
    for fewer in settings["threads"]:
        if fewer >= threads:
            continue
        for n in TORCH:
            timed[f"{n}@{fewer}t"] = calls[n]
            before[f"{n}@{fewer}t"] = lambda t=fewer: torch.set_num_threads(t)
    return timed, before


def check_same_sums(torch, calls: dict, bags: Bags) -> None:
    """The full-table contenders must compute the same ``[B, F, D]`` (else the race is unfair),
    checked on the rotation's first batch, ``bags``."""
    nb, nf = bags.batch, bags.offsets.shape[0]
    fused = _first(calls["torch_fused"]).numpy().reshape(nb, nf, -1)
    tables = torch.stack(_first(calls["torch_tables"]), dim=1).numpy()
    np.testing.assert_allclose(tables, fused, rtol=1e-5, atol=1e-5)
    if "full_kernel" in calls:
        ours = _first(calls["full_kernel"]).reshape(nb, nf, -1)
        np.testing.assert_allclose(ours, fused, rtol=1e-5, atol=1e-5)
        ours = _first(calls["full_kernel_tables"]).reshape(nf, nb, -1).transpose(1, 0, 2)
        np.testing.assert_allclose(ours, fused, rtol=1e-5, atol=1e-5)


def _first(contender: Rotation):
    # A contender's result on the rotation's first batch.
    return contender.feeds[0]()()


def run(settings: dict) -> dict:
    """Measure one worker's configurations; see the module docstring."""
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"
    import torch  # after the environment is final: torch reads THP_MEM_ALLOC_ENABLE at import

    dim = settings["dim"]
    cards = tuple(settings["cards"])
    total = sum(cards)
    need = total * dim * 4
    avail = meminfo_bytes("MemAvailable")
    result: dict = {"dim": dim, "thp": thp, "full_table_bytes": need, "available_bytes": avail}
    if avail is not None and need + _HEADROOM > avail:
        result["skipped"] = (
            f"full tables at D={dim} need {need / 2**30:.1f} GiB (+{_HEADROOM / 2**30:.0f} GiB "
            f"headroom) but only {avail / 2**30:.1f} GiB is available"
        )
        return result
    t0 = time.perf_counter()
    rng = np.random.default_rng(settings["seed"])
    plan, result["memrec"] = memrec_plan(settings, rng)
    plans = {"memrec": plan}
    if settings.get("half", True):
        plans["memrec_half"] = half_plan(plan)
    weight = full_weight(torch, total, dim, settings["seed"] + 1)
    weight_np = weight.numpy()
    bases = np.concatenate([[0], np.cumsum(cards)]).astype(np.int64)
    emb = torch.nn.EmbeddingBag.from_pretrained
    tables = [emb(weight[bases[f] : bases[f + 1]], mode="sum") for f in range(len(cards))]
    fused = emb(weight, mode="sum")
    assert all(t.weight.data_ptr() == weight[bases[f]].data_ptr() for f, t in enumerate(tables))
    result["setup_s"] = time.perf_counter() - t0
    full = settings["full_kernel"]
    # Goal 4's reference, timed beside MEM-REC at the largest one-hot batch (THP worker only).
    l2_table = resident_table(L2_TABLE_BYTES, dim) if full else None
    l3_bytes = cache_bytes(3) or 32 << 20
    rows = []
    with torch.inference_mode():
        for dist in settings["dists"]:
            for hot in settings["hots"]:
                for batch in settings["batches"]:
                    seed = settings["seed"] + 7919 * batch + 31 * len(dist) + len(hot)
                    batches = make_rotation(
                        seed, cards, batch, dist, hot == "multi", 4 * dim, l3_bytes
                    )
                    bags = batches[0]
                    ids = round(np.mean([b.num_ids for b in batches]))
                    calls = contenders(torch, plans, tables, fused, weight_np, batches, full)
                    if l2_table is not None and hot == "one" and batch == max(settings["batches"]):
                        # Same bags x rows per bag as MEM-REC, timed in the same rotation.
                        calls["gather_l2"], _ = gather_call(l2_table, bags.num_ids, settings["k"])
                    if batch <= 1024:
                        check_same_sums(torch, calls, bags)
                    for threads in settings["threads"]:
                        numba.set_num_threads(threads)
                        timed, before = with_fewer_torch_threads(torch, calls, threads, settings)
                        times = measure(
                            timed, settings["seconds"], settings["rounds"], before=before
                        )
                        row = {"dist": dist, "hot": hot, "batch": batch, "threads": threads}
                        row["ids"] = ids
                        row["rotation"] = len(batches)
                        row["contenders"] = {n: summary(t, batch) for n, t in times.items()}
                        rows.append(row)
                        print(_progress(dim, thp, row), file=sys.stderr, flush=True)
                    del calls, bags, batches
    result["rows"] = rows
    if settings["gather"]:
        result["gather"] = gather_rates(settings, weight_np, result["memrec"]["token_bytes"])
    return result


def gather_rates(settings: dict, dram_table: np.ndarray, token_bytes: int) -> list[dict]:
    """Random row-gather rates from L1/L2/L3-resident tables and the full tables in DRAM."""
    dim = settings["dim"]
    k = settings["k"]
    bags = settings["gather_bags"]
    tables = [
        ("L1-resident (16 KiB)", resident_table(16 << 10, dim)),
        (f"L2-resident ({L2_TABLE_BYTES >> 10} KiB)", resident_table(L2_TABLE_BYTES, dim)),
        (f"token-table size ({token_bytes / 2**20:.1f} MiB, L3)", resident_table(token_bytes, dim)),
        (f"DRAM (full tables, {dram_table.nbytes / 2**30:.1f} GiB)", dram_table),
    ]
    out = []
    for threads in settings["threads"]:
        numba.set_num_threads(threads)
        calls = {}
        rows_per_call = 0
        for name, table in tables:
            calls[name], rows_per_call = gather_call(table, bags, k)
        times = measure(calls, settings["seconds"], settings["rounds"])
        for (name, table), t in zip(tables, times.values(), strict=True):
            p50 = float(np.percentile(t, 50))
            out.append(
                {
                    "threads": threads,
                    "table": name,
                    "bytes": int(table.nbytes),
                    "rows_per_s": rows_per_call / p50,
                    "gb_per_s": rows_per_call * dim * 4 / p50 / 1e9,
                }
            )
    return out


def _progress(dim: int, thp: bool, row: dict) -> str:
    c = row["contenders"]
    parts = " ".join(f"{n}={v['p50_us']:.1f}us" for n, v in c.items())
    return (
        f"D={dim} thp={int(thp)} {row['dist']:7s} {row['hot']:5s} B={row['batch']:<5d} "
        f"t={row['threads']} {parts}"
    )


def main() -> None:
    """``python bench/embedding_worker.py SETTINGS.json RESULT.json``."""
    settings_path, result_path = sys.argv[1], sys.argv[2]
    with open(settings_path) as fh:
        settings = json.load(fh)
    result = run(settings)
    with open(result_path, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
