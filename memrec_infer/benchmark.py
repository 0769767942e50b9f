"""Latency and throughput of a model directory, stage by stage (``memrec-infer bench``).

Each batch goes through the runtime's three stages, each timed on its own:

- ``prepare``: feature prep, raw columns -> dense matrix and jagged ids;
- ``embed``: the bag-lookup kernel -> pooled embeddings ``[B, F, D]``;
- ``dense``: the ONNX dense graph -> scores;

and ``total`` is their sum for the same call. The lookup kernels every batch size needs are
loaded first (compiled, the first time on a machine) and timed apart (``kernels_s``). For every
thread count and batch size the first call is timed apart too (it warms ONNX Runtime and touches
fresh buffers), then calls repeat until a time budget or an iteration cap is reached; p50/p99
and rows per second come from those. The time from process start to the first scored batch is
reported too (``startup_s``).

With a baseline (typically the same model converted with full tables), both models score the
same batches, call by call in alternation, so their ratios share the machine's noise.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import (
    BadValueError,
    InputDataError,
    MemrecError,
    OutputPathError,
    SchemaMismatchError,
)
from .parquet_output import writable_path

STAGES = ("prepare", "embed", "dense", "total")
DEFAULT_BATCH_SIZES = (1, 64, 1024, 16384)
# Generated ids follow a bounded power law over this many distinct values per column.
GENERATED_VOCAB = 100_000
ZIPF_S = 1.05
# A generated multi-hot bag holds 1..MAX_BAG values (facebookresearch/dlrm's synthetic default).
MAX_BAG = 10


@dataclass
class StageStats:
    """Latency of one stage over the timed calls (microseconds) and its throughput."""

    p50_us: float
    p99_us: float
    mean_us: float
    rows_per_s: float


@dataclass
class BatchResult:
    """One (threads, batch size) measurement of one model."""

    threads: int
    batch: int
    iterations: int
    first_call_ms: dict[str, float]
    stages: dict[str, StageStats]
    baseline: dict[str, StageStats] | None = None
    baseline_first_call_ms: dict[str, float] | None = None

    def ratio(self, stage: str) -> float | None:
        """Baseline p50 / model p50 for ``stage`` (> 1: the model is faster), None without one."""
        if self.baseline is None:
            return None
        return self.baseline[stage].p50_us / max(self.stages[stage].p50_us, 1e-9)


@dataclass
class BenchResult:
    """Everything ``memrec-infer bench`` measured, JSON-able with :meth:`to_dict`."""

    model: str
    baseline: str | None
    input: str
    features: int
    dim: int
    token_dtype: str  # how the model stores its token rows: "float32" or "float16"
    startup_s: float
    load_s: float
    kernels_s: float  # loading (the first time on a machine: compiling) the lookup kernels
    first_batch_s: float
    results: list[BatchResult] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for ``--json``); ratios included when there is a baseline."""
        d = asdict(self)
        for r, rd in zip(self.results, d["results"], strict=True):
            if r.baseline is not None:
                rd["ratio"] = {s: r.ratio(s) for s in STAGES}
        return d


# ------------------------------------------------------------------------------ start-up time
def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere).

    Precision is the kernel's clock tick (10 ms), plenty for a start-up time.
    """
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except OSError:
        return None
    # Field 22 (starttime, in clock ticks since boot) counted after the ")" of the command name.
    fields = stat.rsplit(")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return max(0.0, uptime - started)


# --------------------------------------------------------------------------------- input data
def _zipf_ranks(rng: np.random.Generator, n: int) -> np.ndarray:
    e = 1.0 - ZIPF_S
    top = (GENERATED_VOCAB + 1.0) ** e
    u = rng.random(n)
    return np.floor((1.0 + u * (top - 1.0)) ** (1.0 / e)).astype(np.int64) - 1


def _column_kinds(manifest: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Sparse column -> (``"string"`` or ``"int"``, multi-hot) from the features using it."""
    kinds: dict[str, tuple[str, bool]] = {}
    for s in manifest["sparse"]:
        for c in s["columns"]:
            kind = "string" if s["dtype"] == "string" else "int"
            prev = kinds.get(c)
            if prev is not None and prev[0] == "string":
                kind = "string"
            kinds[c] = (kind, bool(s["multi_hot"]) or bool(prev and prev[1]))
    return kinds


def generated_batch(manifest: dict[str, Any], rows: int, seed: int = 0) -> pa.Table:
    """Raw input columns for ``rows`` rows, drawn from the manifest's schema.

    Dense columns are log-normal numbers with 1% nulls; categorical values are Zipf-like
    (bounded power law over ``GENERATED_VOCAB`` values), integers or ``"v<rank>"`` strings;
    multi-hot columns are lists of 1..``MAX_BAG`` values. A column that is both dense and
    categorical (say ``hour``, also in a cross ``origin*dest*hour``) gets integers, which
    serve as both.
    """
    rng = np.random.default_rng(seed)
    kinds = _column_kinds(manifest)
    cols: dict[str, pa.Array] = {}
    for d in manifest["dense"]:
        if d["name"] in kinds:
            continue
        x = rng.lognormal(3.0, 1.0, rows)
        x[rng.random(rows) < 0.01] = np.nan
        cols[d["name"]] = pa.array(x, from_pandas=True)
    for name, (kind, multi) in kinds.items():
        lengths = rng.integers(1, MAX_BAG + 1, rows) if multi else np.ones(rows, np.int64)
        ranks = _zipf_ranks(rng, int(lengths.sum()))
        flat = pa.array([f"v{r}" for r in ranks]) if kind == "string" else pa.array(ranks)
        if multi:
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            cols[name] = pa.ListArray.from_arrays(pa.array(offsets), flat)
        else:
            cols[name] = flat
    return pa.table(cols)


# Rows per record batch read from a --input file: whole batches even for B = 1 (Arrow decodes
# a row group batch by batch, and one-row batches took half a minute to leave a 65k-row one).
_READ_ROWS = 1 << 16


def file_batches(path: str | os.PathLike[str], prep: Any, sizes: Sequence[int]):
    """The first ``B`` rows of a Parquet input for each ``B`` in ``sizes`` (repeated if short),
    checked against the model's feature prep ``prep``.

    Read as ``score`` reads its inputs (a file, directory or glob; the same errors, naming the
    file and the missing or mistyped column), and only as many rows as the largest ``B``.
    """
    from .parquet_input import find_inputs, iter_batches, read_schema

    files = find_inputs([os.fspath(path)])
    schema = read_schema(files, prep.columns)
    prep.check_schema(schema, source=os.fspath(path))
    need = max(sizes)
    parts: list[pa.RecordBatch] = []
    for ib in iter_batches(files, schema, _READ_ROWS):
        parts.append(ib.batch)
        need -= ib.batch.num_rows
        if need <= 0:
            break
    table = pa.Table.from_batches(parts, schema=schema).slice(0, max(sizes))
    if table.num_rows == 0:
        raise InputDataError(f"{path}: has no rows to benchmark with")
    try:
        prep(table)  # a value the model cannot take, named here rather than mid-measurement
    except BadValueError as exc:
        raise InputDataError(f"{path}: row {exc.row:,} of the input: {exc.detail}") from exc
    out = {}
    for b in sizes:
        reps = -(-b // table.num_rows)
        t = pa.concat_tables([table] * reps) if reps > 1 else table
        out[b] = t.slice(0, b).combine_chunks()
    return out


# ------------------------------------------------------------------------------------ timing
def _one_call(model: Any, batch: pa.Table) -> tuple[float, float, float]:
    clock = time.perf_counter
    t0 = clock()
    pb = model.prepare(batch)
    t1 = clock()
    emb = model.embed(pb)
    t2 = clock()
    model.dense_forward(pb.dense, emb)
    t3 = clock()
    return t1 - t0, t2 - t1, t3 - t2


def _ms(call: tuple[float, float, float]) -> dict[str, float]:
    return {s: v * 1e3 for s, v in zip(STAGES, (*call, sum(call)), strict=True)}


def _stats(calls: list[tuple[float, float, float]], rows: int) -> dict[str, StageStats]:
    arr = np.asarray(calls, dtype=np.float64)
    arr = np.concatenate([arr, arr.sum(axis=1, keepdims=True)], axis=1)
    out = {}
    for j, s in enumerate(STAGES):
        col = arr[:, j]
        mean = float(col.mean())
        out[s] = StageStats(
            p50_us=float(np.percentile(col, 50)) * 1e6,
            p99_us=float(np.percentile(col, 99)) * 1e6,
            mean_us=mean * 1e6,
            rows_per_s=rows / mean if mean > 0 else float("inf"),
        )
    return out


def time_batch(
    models: list[Any],
    batch: pa.Table,
    seconds: float,
    max_iterations: int,
    warmup: int,
    min_iterations: int = 5,
) -> tuple[list[dict[str, float]], list[dict[str, StageStats]], int]:
    """Time ``models`` on one batch, alternating call by call.

    Returns the first-call times (ms per stage), the stage statistics of each model and the
    number of timed calls per model.
    """
    rows = batch.num_rows
    first = [_ms(_one_call(m, batch)) for m in models]
    for _ in range(max(0, warmup - 1)):
        for m in models:
            _one_call(m, batch)
    calls: list[list[tuple[float, float, float]]] = [[] for _ in models]
    start = time.perf_counter()
    n = 0
    while n < max_iterations and (n < min_iterations or time.perf_counter() - start < seconds):
        for m, out in zip(models, calls, strict=True):
            out.append(_one_call(m, batch))
        n += 1
    return first, [_stats(c, rows) for c in calls], n


def run_benchmark(
    model_dir: str | os.PathLike[str],
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    threads: Sequence[int] | None = None,
    *,
    baseline_dir: str | os.PathLike[str] | None = None,
    input_path: str | os.PathLike[str] | None = None,
    seconds: float = 1.0,
    max_iterations: int = 1000,
    warmup: int = 3,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> BenchResult:
    """Measure a model directory (and optionally a baseline) stage by stage.

    Parameters
    ----------
    model_dir : the model directory to measure
    batch_sizes : rows per batch; each is measured for every thread count
    threads : thread counts for Numba and ONNX Runtime together (default: 1 and all cores)
    baseline_dir : a second model directory with the same input columns (e.g. full tables),
        timed on the same batches in alternation
    input_path : take rows from this Parquet file instead of generating them
    seconds : time budget per (threads, batch size) for the timed calls
    max_iterations : cap on timed calls per (threads, batch size)
    warmup : untimed calls before timing, the first of which is reported as ``first_call_ms``
    seed : seed of the generated input
    log : receives progress lines (None: silent)

    Returns
    -------
    BenchResult

    Raises
    ------
    InvalidModelError
        A model directory cannot be loaded.
    InputDataError, SchemaMismatchError
        The input file cannot feed the model.
    """
    import numba

    from .runtime import COMPILING_NOTICE, load

    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise MemrecError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    # Labelled as run: a model takes at most Numba's pool of threads (the cores by default).
    pool = numba.config.NUMBA_NUM_THREADS
    thread_counts = list(dict.fromkeys(min(t, pool) for t in threads or sorted({1, pool})))
    say = log or (lambda _msg: None)

    # Start-up first: the smallest batch is scored as soon as the model is loaded.
    t0 = time.perf_counter()
    model = load(model_dir, threads=thread_counts[0])
    load_s = time.perf_counter() - t0
    if input_path is not None:
        batches = file_batches(input_path, model.prep, sizes[:1])
        source = f"{input_path} (first rows, repeated if short)"
    else:
        batches = {sizes[0]: generated_batch(model.manifest, sizes[0], seed)}
        source = f"generated from the manifest's schema (seed {seed}, Zipf-like ids)"
    # Every batch size's kernels, before any call is timed; a first run says why it waits.
    t1 = time.perf_counter()
    model.load_kernels(sizes, on_slow=lambda: say(COMPILING_NOTICE))
    kernels_s = time.perf_counter() - t1
    t1 = time.perf_counter()
    model.predict(batches[sizes[0]])
    first_batch_s = time.perf_counter() - t1
    age = process_age()
    startup_s = age if age is not None else load_s + kernels_s + first_batch_s
    say(f"first batch scored {startup_s:.2f} s after process start")

    if input_path is not None:
        batches = file_batches(input_path, model.prep, sizes)
    else:
        batches.update({b: generated_batch(model.manifest, b, seed) for b in sizes[1:]})
    result = BenchResult(
        model=str(model_dir),
        baseline=str(baseline_dir) if baseline_dir is not None else None,
        input=source,
        features=model.plan.num_features,
        dim=model.plan.dim,
        token_dtype=model.plan.tokens.dtype.name,
        startup_s=startup_s,
        load_s=load_s,
        kernels_s=kernels_s,
        first_batch_s=first_batch_s,
        machine=_machine(),
    )
    for i, t in enumerate(thread_counts):
        if i > 0:
            model = load(model_dir, threads=t)
            model.load_kernels(sizes)  # compiled above: loaded in this process
        models = [model]
        if baseline_dir is not None:
            base = load(baseline_dir, threads=t)
            _check_same_columns(model, base, baseline_dir, batches[sizes[0]].schema)
            base.load_kernels(sizes, on_slow=lambda: say(COMPILING_NOTICE))  # its D may differ
            models.append(base)
        for b in sizes:
            first, stats, n = time_batch(models, batches[b], seconds, max_iterations, warmup)
            res = BatchResult(t, b, n, first[0], stats[0])
            if baseline_dir is not None:
                res.baseline, res.baseline_first_call_ms = stats[1], first[1]
            result.results.append(res)
            say(f"threads {t} batch {b}: total p50 {stats[0]['total'].p50_us:.1f} us ({n} calls)")
    return result


def _check_same_columns(model: Any, base: Any, where: Any, schema: pa.Schema) -> None:
    # The baseline takes the model's input: its column names, and their types in ``schema``.
    missing = [c for c in base.prep.columns if c not in model.prep.columns]
    if missing:
        raise MemrecError(
            f"{where}: the baseline reads column(s) {', '.join(missing)} that the model does "
            "not; a baseline must take the same input columns"
        )
    try:
        base.prep.check_schema(schema)
    except SchemaMismatchError as exc:
        raise SchemaMismatchError(
            f"{where}: the baseline cannot take the model's input: {exc}"
        ) from exc


def _machine() -> dict[str, Any]:
    import numba
    import onnxruntime

    from . import __version__

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "memrec_infer": __version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
    }


# ----------------------------------------------------------------------------------- output
def format_table(result: BenchResult) -> str:
    """The results as a text table for people."""
    lines = [
        f"model: {result.model} (F={result.features}, D={result.dim}, "
        f"{result.token_dtype} token rows)",
        f"input: {result.input}",
        f"machine: {result.machine.get('cpu')}, {result.machine.get('cores')} cores",
        f"startup: first batch scored {result.startup_s:.2f} s after process start "
        f"(load {result.load_s:.2f} s, kernels {result.kernels_s:.2f} s, "
        f"first batch {result.first_batch_s:.2f} s)",
    ]
    if result.baseline:
        lines.append(f"baseline: {result.baseline} (ratio = baseline p50 / model p50)")
    head = f"{'threads':>7} {'batch':>6} {'stage':<8} {'p50 us':>10} {'p99 us':>10} "
    head += f"{'rows/s':>12} {'first ms':>9}"
    if result.baseline:
        head += f" {'base p50 us':>12} {'ratio':>7}"
    lines += ["", head]
    for r in result.results:
        for s in STAGES:
            st = r.stages[s]
            line = (
                f"{r.threads:>7} {r.batch:>6} {s:<8} {st.p50_us:>10.1f} {st.p99_us:>10.1f} "
                f"{st.rows_per_s:>12,.0f} {r.first_call_ms[s]:>9.2f}"
            )
            if r.baseline is not None:
                line += f" {r.baseline[s].p50_us:>12.1f} {r.ratio(s):>6.2f}x"
            lines.append(line)
    lines.append("")
    lines.append(
        "first ms = the first call of each batch size, excluded from p50/p99 (ONNX Runtime "
        "warm-up, fresh buffers; the kernels are loaded before, see startup)"
    )
    return "\n".join(lines)


def check_plot_path(path: str | os.PathLike[str]) -> str:
    """``path`` (absolute) if :func:`plot` can write a PNG there; checked before measuring.

    Raises
    ------
    MemrecError
        matplotlib is not installed (it is in the ``bench`` extra).
    OutputPathError
        ``path`` does not end in ``.png``, or its directory is missing or not writable.
    """
    text = os.fspath(path)
    if not text.lower().endswith(".png"):
        raise OutputPathError(f"--plot {text}: expected a path ending in .png")
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MemrecError(
            "--plot needs matplotlib; install it with: pip install 'memrec-infer[bench]'"
        ) from exc
    return writable_path(text)


def plot(result: BenchResult, path: str | os.PathLike[str]) -> None:
    """Latency (p50) vs batch size per stage, one panel per thread count, to a PNG.

    Raises
    ------
    MemrecError
        matplotlib is not installed, the path does not end in ``.png`` or cannot be written
        (:func:`check_plot_path`).
    """
    path = check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted({r.threads for r in result.results})
    fig, axes = plt.subplots(1, len(counts), figsize=(6 * len(counts), 4.5), squeeze=False)
    for ax, t in zip(axes[0], counts, strict=True):
        rows = [r for r in result.results if r.threads == t]
        xs = [r.batch for r in rows]
        for i, s in enumerate(STAGES):
            ax.plot(xs, [r.stages[s].p50_us for r in rows], "-o", color=f"C{i}", label=s)
            if rows and rows[0].baseline is not None:
                ys = [r.baseline[s].p50_us for r in rows if r.baseline is not None]
                ax.plot(xs, ys, "--x", color=f"C{i}", label=f"{s} (baseline)")
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="p50 latency (us)",
               title=f"{Path(result.model).name}: {t} thread(s)")  # fmt: skip
        ax.grid(True, which="both", lw=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise OutputPathError(f"--plot {path}: cannot write it: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
