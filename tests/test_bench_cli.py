"""``memrec-infer bench``: options, JSON and table output, baseline, input file, plot, errors.

Tiny models (``score_fixtures``), batch sizes 1 and 8, a few calls: seconds, not minutes.
"""

from __future__ import annotations

import json
import shutil
import time

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import score_fixtures
from click.testing import CliRunner

from memrec_infer.benchmark import STAGES, generated_batch, process_age
from memrec_infer.cli import main
from memrec_infer.prep import FeaturePrep
from memrec_infer.runtime import load

flights_model_dir = score_fixtures.flights_model_dir
bags_model_dir = score_fixtures.bags_model_dir
flights_table = score_fixtures.flights_table

FAST = ["--batch-sizes", "1,8", "--threads", "1", "--seconds", "0", "--iterations", "3",
        "--warmup", "1", "-q"]  # fmt: skip


def bench(*args: str, code: int = 0):
    result = CliRunner().invoke(main, ["bench", *args])
    assert result.exit_code == code, result.output
    return result


def test_json_has_every_stage_for_every_batch_size(flights_model_dir):
    out = json.loads(bench(str(flights_model_dir), *FAST, "--json").stdout)
    assert [(r["threads"], r["batch"]) for r in out["results"]] == [(1, 1), (1, 8)]
    assert (out["features"], out["dim"], out["token_dtype"]) == (5, 16, "float32")
    assert out["startup_s"] > 0 and out["load_s"] > 0 and out["kernels_s"] >= 0
    for r in out["results"]:
        assert r["iterations"] == 3  # --iterations caps the timed calls
        assert set(r["stages"]) == set(STAGES) == set(r["first_call_ms"])
        for s in STAGES:
            st = r["stages"][s]
            assert 0 < st["p50_us"] <= st["p99_us"]
            assert st["rows_per_s"] == pytest.approx(r["batch"] / st["mean_us"] * 1e6)
        parts = sum(r["stages"][s]["mean_us"] for s in ("prepare", "embed", "dense"))
        assert r["stages"]["total"]["mean_us"] == pytest.approx(parts)
        assert "ratio" not in r and r["baseline"] is None


def test_table_for_people(flights_model_dir):
    text = bench(str(flights_model_dir), *FAST).stdout
    assert "startup: first batch scored" in text
    rows = [line.split() for line in text.splitlines() if line.split()[:1] == ["1"]]
    assert [(r[1], r[2]) for r in rows] == [(b, s) for b in ("1", "8") for s in STAGES]


def test_a_first_run_compile_is_announced_and_timed_apart(flights_model_dir, monkeypatch):
    from memrec_infer.kernels.bags import BagPlan
    from memrec_infer.runtime import COMPILING_NOTICE

    load_kernels = BagPlan.load_kernels

    def slow(self, sizes):  # as on a machine without Numba's cache: about a minute
        time.sleep(1.3)
        load_kernels(self, sizes)

    monkeypatch.setattr(BagPlan, "load_kernels", slow)
    args = [str(flights_model_dir), *[a for a in FAST if a != "-q"], "--json"]
    result = bench(*args)
    assert result.stderr.splitlines()[0] == COMPILING_NOTICE
    out = json.loads(result.stdout)
    assert out["kernels_s"] >= 1.3 and out["first_batch_s"] < 1.3  # apart from the batch


def test_baseline_is_timed_side_by_side_with_ratios(flights_model_dir):
    out = json.loads(
        bench(str(flights_model_dir), *FAST, "--json", "--baseline", str(flights_model_dir)).stdout
    )
    for r in out["results"]:
        assert set(r["baseline"]) == set(STAGES)
        for s in STAGES:
            want = r["baseline"][s]["p50_us"] / r["stages"][s]["p50_us"]
            assert r["ratio"][s] == pytest.approx(want)
    text = bench(str(flights_model_dir), *FAST, "--baseline", str(flights_model_dir)).stdout
    assert "ratio = baseline p50 / model p50" in text


def test_baseline_with_other_columns_is_refused(flights_model_dir, bags_model_dir):
    result = bench(str(flights_model_dir), *FAST, "--baseline", str(bags_model_dir), code=1)
    assert "the baseline reads column(s)" in result.output


def test_input_file_rows_are_used_and_repeated_if_short(flights_model_dir, tmp_path):
    path = tmp_path / "few.parquet"
    pq.write_table(pq.read_table(score_fixtures.FLIGHTS).slice(0, 5), path)
    out = json.loads(bench(str(flights_model_dir), *FAST, "--json", "--input", str(path)).stdout)
    assert str(path) in out["input"]
    assert [r["batch"] for r in out["results"]] == [1, 8]


def test_input_file_missing_columns_is_a_clear_error(flights_model_dir, tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"distance": [1.0, 2.0]}), path)
    result = bench(str(flights_model_dir), *FAST, "--input", str(path), code=1)
    assert f"{path}: missing column(s) " in result.output and "carrier" in result.output
    result = bench(str(flights_model_dir), *FAST, "--input", str(tmp_path / "no.parquet"), code=1)
    assert "no.parquet: no such file or directory" in result.output


def test_input_values_and_types_the_model_cannot_take_name_the_file(
    flights_model_dir, flights_table, tmp_path
):
    path = tmp_path / "in.parquet"
    t = flights_table.slice(0, 3)
    i = t.schema.get_field_index("distance")
    pq.write_table(t.set_column(i, "distance", pa.array([1.0, 2.0, float("inf")])), path)
    result = bench(str(flights_model_dir), *FAST, "--input", str(path), code=1)
    assert f"{path}: row 2 of the input: column 'distance' (dense) holds inf" in result.output
    i = t.schema.get_field_index("flight")
    pq.write_table(t.set_column(i, "flight", pa.array(["1", "2", "3"])), path)
    result = bench(str(flights_model_dir), *FAST, "--input", str(path), code=1)
    assert f"{path}: column 'flight' (sparse feature 'flight'): expected integers" in result.output


def test_baseline_taking_other_column_types_is_named(flights_model_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(flights_model_dir, other)
    manifest = json.loads((other / "manifest.json").read_text())
    sparse = next(s for s in manifest["sparse"] if s["dtype"] == "string" and not s["multi_hot"])
    sparse["dtype"] = "int"
    (other / "manifest.json").write_text(json.dumps(manifest))
    result = bench(str(flights_model_dir), *FAST, "--baseline", str(other), code=1)
    assert f"{other}: the baseline cannot take the model's input" in result.output
    assert "expected integers" in result.output and "Traceback" not in result.output


def test_plot_writes_a_png(flights_model_dir, tmp_path):
    path = tmp_path / "lat.png"
    bench(str(flights_model_dir), *FAST, "--plot", str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("name", "said"),
    [("lat.txt", "expected a path ending in .png"), ("nodir/lat.png", "does not exist")],
)
def test_a_plot_path_that_cannot_work_is_refused_before_measuring(
    flights_model_dir, tmp_path, monkeypatch, name, said
):
    def measured(*args, **kwargs):
        raise AssertionError("measured before the --plot path was checked")

    monkeypatch.setattr("memrec_infer.benchmark.run_benchmark", measured)
    result = bench(str(flights_model_dir), *FAST, "--plot", str(tmp_path / name), code=1)
    assert said in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_results_are_printed_even_if_the_plot_cannot_be_written(
    flights_model_dir, tmp_path, monkeypatch
):
    import matplotlib.figure

    def fails(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fails)
    result = bench(str(flights_model_dir), *FAST, "--plot", str(tmp_path / "lat.png"), code=1)
    assert "total" in result.stdout and "No space left on device" in result.stderr


def test_thread_counts_beyond_the_cores_run_as_all_cores(flights_model_dir):
    pool = numba.config.NUMBA_NUM_THREADS
    args = ["--batch-sizes", "1", "--threads", f"{pool},{pool + 62}", "--seconds", "0",
            "--iterations", "2", "--warmup", "1", "-q", "--json"]  # fmt: skip
    out = json.loads(bench(str(flights_model_dir), *args).stdout)
    assert [r["threads"] for r in out["results"]] == [pool]


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 cores")
def test_multi_hot_model_and_two_thread_counts(bags_model_dir):
    out = json.loads(
        bench(
            str(bags_model_dir),
            *FAST[:2],
            "--threads",
            "1,2",
            "--seconds",
            "0",
            "--iterations",
            "2",
            "--warmup",
            "1",
            "-q",
            "--json",
        ).stdout  # fmt: skip
    )
    assert [(r["threads"], r["batch"]) for r in out["results"]] == [(1, 1), (1, 8), (2, 1), (2, 8)]


@pytest.mark.parametrize("sizes", ["0,8", "a", ""])
def test_bad_batch_sizes_are_usage_errors(flights_model_dir, sizes):
    result = bench(str(flights_model_dir), "--batch-sizes", sizes, code=2)
    assert "--batch-sizes" in result.output


def test_missing_model_dir_is_a_clear_error(tmp_path):
    result = bench(str(tmp_path / "nope"), *FAST, code=1)
    assert "Error:" in result.output and "nope" in result.output


def test_generated_batch_follows_the_schema_and_scores(bags_model_dir):
    model = load(bags_model_dir, threads=1)
    a = generated_batch(model.manifest, 50, seed=3)
    assert a.equals(generated_batch(model.manifest, 50, seed=3))
    assert not a.equals(generated_batch(model.manifest, 50, seed=4))
    assert pa.types.is_list(a.schema.field("tags").type)
    assert pa.types.is_string(a.schema.field("words").type.value_type)
    assert pa.types.is_integer(a.schema.field("user").type)
    lengths = np.asarray(a.column("tags").combine_chunks().value_lengths())
    assert lengths.min() >= 1 and lengths.max() <= 10
    scores = model.predict(a)
    assert scores.shape == (50,) and np.all((scores >= 0) & (scores <= 1))


def test_generated_batch_serves_a_column_both_dense_and_categorical(flights_model_dir):
    # As in the demo's model: "hour" is a dense feature and a part of a cross feature.
    manifest = dict(load(flights_model_dir, threads=1).manifest)
    cross = {"name": "origin*hour", "columns": ["origin", "hour"], "dtype": "cross",
             "multi_hot": False, "table": "origin", "pooling": "sum"}  # fmt: skip
    manifest["sparse"] = [*manifest["sparse"], cross]
    assert "hour" in [d["name"] for d in manifest["dense"]]
    batch = generated_batch(manifest, 20)
    assert pa.types.is_integer(batch.schema.field("hour").type)
    pb = FeaturePrep(manifest["dense"], manifest["sparse"])(batch)
    assert pb.dense.shape == (20, len(manifest["dense"])) and pb.offsets.shape == (6, 21)


def test_process_age_is_the_time_since_this_process_started():
    age = process_age()
    assert age is None or 0 < age < 24 * 3600
