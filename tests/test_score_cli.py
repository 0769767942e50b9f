"""``memrec-infer score`` end to end: the scores are exactly ``Model.predict``'s, in input order."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import score_fixtures
from click.testing import CliRunner

from memrec_infer.cli import main
from memrec_infer.runtime import load

# The shared fixtures, under the names tests ask for.
flights_model_dir = score_fixtures.flights_model_dir
flights_table = score_fixtures.flights_table


@pytest.fixture(scope="module")
def model(flights_model_dir):
    return load(flights_model_dir, threads=1)


def score(*args: str):
    result = CliRunner().invoke(main, ["score", *args])
    assert result.exit_code == 0, result.output
    return result


def test_bundled_flights_file_with_keep_columns(model, flights_model_dir, tmp_path):
    table = pq.read_table(score_fixtures.FLIGHTS)  # all 327,346 rows, 5 row groups
    out = tmp_path / "scores.parquet"
    result = score(str(flights_model_dir), str(score_fixtures.FLIGHTS), "-o", str(out),
                   "--keep", "tailnum", "--keep", "flight", "--batch-size", "50000")  # fmt: skip
    got = pq.read_table(out)
    assert got.schema.names == ["tailnum", "flight", "score"]
    assert got.schema.field("score").type == pa.float32()
    np.testing.assert_array_equal(got.column("score").to_numpy(), model.predict(table))
    assert got.column("tailnum").equals(table.column("tailnum"))
    assert got.column("flight").equals(table.column("flight"))
    assert f"scored {table.num_rows:,} rows from 1 file(s)" in result.stderr
    assert "rows/s" in result.stderr


def test_directory_of_several_files_in_path_order(model, flights_model_dir, flights_table,
                                                  tmp_path):  # fmt: skip
    src = tmp_path / "in"
    src.mkdir()
    bounds = [0, 900, 1000, 2500, flights_table.num_rows]
    for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        # Named so that sorted path order is row order, written in another order.
        pq.write_table(flights_table.slice(a, b - a), src / f"part-{3 - i}.parquet")
    (src / "_SUCCESS").write_text("")  # Spark's marker: skipped, not an unreadable file
    expected_order = [3, 2, 1, 0]  # part-0.parquet holds the last slice, and comes first
    pieces = [flights_table.slice(bounds[j], bounds[j + 1] - bounds[j]) for j in expected_order]
    expected = pa.concat_tables(pieces)
    out = tmp_path / "scores.parquet"
    score(str(flights_model_dir), str(src), "-o", str(out), "--keep", "flight",
          "--batch-size", "512", "--quiet")  # fmt: skip
    got = pq.read_table(out)
    np.testing.assert_array_equal(got.column("score").to_numpy(), model.predict(expected))
    assert got.column("flight").to_pylist() == expected.column("flight").to_pylist()
    # The same files through a glob, given twice over: rows twice, in argument order.
    score(str(flights_model_dir), str(src / "part-*.parquet"), str(src / "part-0.parquet"),
          "-o", str(out), "--force", "-q")  # fmt: skip
    got = pq.read_table(out).column("score").to_numpy()
    tail = model.predict(pieces[0])  # part-0.parquet again
    np.testing.assert_array_equal(got, np.concatenate([model.predict(expected), tail]))


def test_hive_partitioned_dataset(model, flights_model_dir, flights_table, tmp_path):
    # origin is a model column that lives only in the directory names.
    src = tmp_path / "hive"
    pieces = []
    for origin in ("EWR", "JFK", "LGA"):
        part = flights_table.filter(pc.equal(flights_table.column("origin"), origin))
        (src / f"origin={origin}").mkdir(parents=True)
        half = part.num_rows // 2
        pq.write_table(part.slice(0, half).drop_columns(["origin"]),
                       src / f"origin={origin}" / "0.parquet")  # fmt: skip
        pq.write_table(part.slice(half).drop_columns(["origin"]),
                       src / f"origin={origin}" / "1.parquet")  # fmt: skip
        pieces.append(part)
    expected = pa.concat_tables(pieces)
    out = tmp_path / "scores"
    score(str(flights_model_dir), str(src), "-o", str(out), "--keep", "origin", "--keep",
          "tailnum", "--partitioned", "--part-rows", "1500", "--threads", "1", "-q")  # fmt: skip
    assert sorted(os.listdir(out)) == ["part-00000.parquet", "part-00001.parquet",
                                       "part-00002.parquet"]  # fmt: skip
    got = pq.read_table(out)
    np.testing.assert_array_equal(got.column("score").to_numpy(), model.predict(expected))
    assert got.column("origin").to_pylist() == expected.column("origin").to_pylist()
    assert got.column("tailnum").to_pylist() == expected.column("tailnum").to_pylist()


def test_a_column_both_in_the_files_and_the_directory_names_is_refused(
    flights_model_dir, flights_table, tmp_path
):
    # Arrow would read the directory's value in place of the file's own, silently.
    (tmp_path / "carrier=ZZ").mkdir()
    pq.write_table(flights_table.slice(0, 20), tmp_path / "carrier=ZZ" / "a.parquet")
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(main, ["score", str(flights_model_dir), str(tmp_path), "-o",
                                       str(out), "-q"])  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert ("a.parquet: column 'carrier' is both in the file and in its directory name "
            "(carrier=ZZ)") in result.stderr  # fmt: skip
    assert not out.exists()


def test_sigterm_removes_the_unfinished_output(flights_model_dir, flights_table, tmp_path):
    # As Ctrl-C does: a scheduler's kill (SIGTERM) leaves neither output nor temporary.
    big = pa.concat_tables([flights_table] * 4)
    pq.write_table(big, tmp_path / "in.parquet")
    out = tmp_path / "out" / "s.parquet"
    out.parent.mkdir()
    exe = Path(sys.executable).with_name("memrec-infer")
    args = ["score", str(flights_model_dir), str(tmp_path / "in.parquet"), "-o", str(out),
            "--batch-size", "16", "--threads", "1", "-q"]  # fmt: skip
    proc = subprocess.Popen([str(exe), *args], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300  # the kernels load from the warm-up's cache
    while not os.listdir(out.parent) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until it writes rows (the temporary exists)
    assert proc.poll() is None, proc.stderr.read().decode()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert os.listdir(out.parent) == []


def test_info_refuses_a_graph_that_serving_would_refuse(flights_model_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(flights_model_dir, bad)
    graph = bad / "dense.onnx"
    graph.write_bytes(b"\0" * graph.stat().st_size)  # the right size: only its sha256 differs
    result = CliRunner().invoke(main, ["info", str(bad)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"model directory {bad}: dense.onnx: ONNX Runtime cannot load it" in result.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_full_standard_output_is_one_line_not_a_traceback(flights_model_dir):
    exe = Path(sys.executable).with_name("memrec-infer")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([str(exe), "info", str(flights_model_dir), "--json"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr == "Error: could not write to standard output: No space left on device\n"


def test_user_mistakes_exit_1_with_a_message_and_no_traceback(flights_model_dir, flights_table,
                                                             tmp_path):  # fmt: skip
    src = tmp_path / "in.parquet"
    pq.write_table(flights_table.slice(0, 50).drop_columns(["carrier"]), src)
    runner = CliRunner()
    out = str(tmp_path / "out.parquet")
    result = runner.invoke(main, ["score", str(flights_model_dir), str(src), "-o", out])
    assert result.exit_code == 1
    assert f"Error: {src}: missing column(s) 'carrier'" in result.stderr
    assert "Traceback" not in result.output and not os.path.exists(out)

    pq.write_table(flights_table.slice(0, 50), src)
    missing = str(tmp_path / "nope" / "out.parquet")
    result = runner.invoke(main, ["score", str(flights_model_dir), str(src), "-o", missing])
    assert result.exit_code == 1 and "does not exist; create it first" in result.stderr

    (tmp_path / "out.parquet").write_bytes(b"previous")
    result = runner.invoke(main, ["score", str(flights_model_dir), str(src), "-o", out])
    assert result.exit_code == 1 and "already exists; pass --force" in result.stderr
    assert (tmp_path / "out.parquet").read_bytes() == b"previous"

    result = runner.invoke(main, ["score", str(flights_model_dir), str(src), "-o", out,
                                  "--force", "--keep", "score"])  # fmt: skip
    assert result.exit_code == 1 and "holds the scores" in result.stderr

    result = runner.invoke(main, ["score", str(flights_model_dir), str(src), "-o", out,
                                  "--force", "--map", "carrier"])  # fmt: skip
    assert result.exit_code == 1 and "MODEL_COLUMN=INPUT_COLUMN" in result.stderr


def test_quiet_prints_nothing_and_help_has_an_example(flights_model_dir, flights_table, tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(flights_table.slice(0, 50), src)
    result = score(str(flights_model_dir), str(src), "-o", str(tmp_path / "o.parquet"), "-q")
    assert result.stderr == "" and result.stdout == ""
    help_text = CliRunner().invoke(main, ["score", "--help"]).output
    assert "memrec-infer score model/ data/flights.parquet -o scores.parquet" in help_text
