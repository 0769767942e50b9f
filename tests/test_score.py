"""Streaming Parquet scoring (``memrec_infer.scoring``): types, nulls, order, failures."""

from __future__ import annotations

import io
import os
import shutil
import signal
import stat
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import score_fixtures

from memrec_infer.errors import (
    InputDataError,
    InvalidModelError,
    MemrecError,
    OutputPathError,
    SchemaMismatchError,
)
from memrec_infer.models.checkpoint import load_checkpoint
from memrec_infer.parquet_output import ScoresWriter
from memrec_infer.progress import Progress
from memrec_infer.readahead import readahead
from memrec_infer.runtime import load
from memrec_infer.scoring import parse_mapping, score_parquet

# The shared fixtures, under the names tests ask for.
bags_model_dir = score_fixtures.bags_model_dir
flights_model_dir = score_fixtures.flights_model_dir
flights_table = score_fixtures.flights_table


@pytest.fixture(scope="module")
def flights_model(flights_model_dir):
    return load(flights_model_dir, threads=1)


@pytest.fixture(scope="module")
def bags_model(bags_model_dir):
    return load(bags_model_dir, threads=1)


def scores_of(path) -> np.ndarray:
    return pq.read_table(path).column("score").to_numpy()


def leftovers(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if ".tmp-" in n)


def test_nulls_score_as_the_trained_model_does(flights_model, flights_model_dir, tmp_path):
    # Nulls in dense (float and int) and categorical (string, int, dictionary) columns.
    t = pa.table(
        {
            "distance": pa.array([100, None, 2500, None], pa.int64()),
            "plane_year": pa.array([None, 1999.0, np.nan, 2010.0], pa.float64()),
            "seats": pa.array([None, 50, 200, None], pa.int16()),
            "hour": pa.array([5, 6, None, 23], pa.int8()),
            "carrier": pa.array(["UA", None, "AA", "UA"]).dictionary_encode(),
            "flight": pa.array([1, 2, None, 1], pa.int32()),
            "origin": pa.array(["JFK", "LGA", None, "XXX"]),
            "manufacturer": pa.array([None, "BOEING", None, "AIRBUS"]),
        }
    )
    pq.write_table(t, tmp_path / "in.parquet")
    score_parquet(flights_model, [tmp_path / "in.parquet"], tmp_path / "out.parquet")
    got = scores_of(tmp_path / "out.parquet")
    # The torch model of the checkpoint is the training side: same scores up to float error.
    torch_model = load_checkpoint(flights_model_dir.parent / "model.pt")
    np.testing.assert_allclose(got, torch_model.predict(t), rtol=1e-5, atol=1e-6)
    # A null dense value scores as its fill value (manifest: plane_year fill 2000, seats 100).
    filled = t.set_column(1, "plane_year", pa.array([2000.0, 1999.0, 2000.0, 2010.0]))
    filled = filled.set_column(2, "seats", pa.array([100, 50, 200, 100], pa.int16()))
    np.testing.assert_array_equal(got, flights_model.predict(filled))


def test_string_and_dictionary_columns_score_alike(flights_model, flights_table, tmp_path):
    plain = flights_table.slice(0, 1500)
    encoded = plain
    for name in ("carrier", "origin", "manufacturer"):
        i = plain.schema.get_field_index(name)
        encoded = encoded.set_column(i, name, plain.column(name).dictionary_encode())
    pq.write_table(plain, tmp_path / "plain.parquet")
    # Two files with dictionaries that differ (and one file not dictionary-encoded at all).
    pq.write_table(encoded.slice(0, 700), tmp_path / "enc0.parquet")
    pq.write_table(encoded.slice(700), tmp_path / "enc1.parquet")
    assert pa.types.is_dictionary(pq.read_schema(tmp_path / "enc0.parquet").field("carrier").type)
    score_parquet(flights_model, [tmp_path / "plain.parquet"], tmp_path / "a.parquet")
    score_parquet(
        flights_model,
        [tmp_path / "enc0.parquet", tmp_path / "enc1.parquet"],
        tmp_path / "b.parquet",
        keep=["carrier"],
        batch_size=512,
    )
    expected = flights_model.predict(plain)
    np.testing.assert_array_equal(scores_of(tmp_path / "a.parquet"), expected)
    out = pq.read_table(tmp_path / "b.parquet")
    np.testing.assert_array_equal(out.column("score").to_numpy(), expected)
    assert out.column("carrier").to_pylist() == plain.column("carrier").to_pylist()
    # Mixed: one file plain, one dictionary-encoded; read as one type.
    score_parquet(
        flights_model,
        [tmp_path / "enc0.parquet", tmp_path / "plain.parquet"],
        tmp_path / "c.parquet",
        keep=["carrier"],
    )
    mixed = pq.read_table(tmp_path / "c.parquet")
    assert mixed.num_rows == 2200


def test_list_columns_are_multi_hot_bags(bags_model, bags_model_dir, tmp_path):
    t = pa.table(
        {
            "x": pa.array([1.5, None, 3.0, 0.0, 2.0]),
            "tags": pa.array([[1, 2, 3], [], None, [7, None], [2]], pa.list_(pa.int64())),
            "words": pa.array(
                [["a", "b"], None, ["c"], [], ["a", None]], pa.large_list(pa.string())
            ),
            "user": pa.array([10, 11, None, 13, 14], pa.uint32()),
            "rid": pa.array(["r0", "r1", "r2", "r3", "r4"]),
        }
    )
    pq.write_table(t, tmp_path / "bags.parquet", row_group_size=2)
    summary = score_parquet(
        bags_model, [tmp_path / "bags.parquet"], tmp_path / "out.parquet", keep=["rid"],
        batch_size=3,
    )  # fmt: skip
    assert summary.rows == 5
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column("rid").to_pylist() == ["r0", "r1", "r2", "r3", "r4"]
    torch_model = load_checkpoint(bags_model_dir.parent / "model.pt")
    np.testing.assert_allclose(out.column("score").to_numpy(), torch_model.predict(t), rtol=1e-5)
    # An empty bag and a null list are the same (zeros), so rows 1 and 2 differ only by x, user.
    np.testing.assert_array_equal(out.column("score").to_numpy(), bags_model.predict(t))


def test_one_hot_column_given_a_list_is_refused(bags_model, tmp_path):
    t = pa.table({"x": [1.0], "tags": [[1]], "words": [["a"]], "user": [[3]]})
    pq.write_table(t, tmp_path / "in.parquet")
    with pytest.raises(SchemaMismatchError, match=r"in\.parquet.*'user'.*one value per row"):
        score_parquet(bags_model, [tmp_path / "in.parquet"], tmp_path / "out.parquet")
    assert not os.path.exists(tmp_path / "out.parquet")


def test_missing_and_mistyped_columns_are_named_before_scoring(flights_model, flights_table,
                                                               tmp_path):  # fmt: skip
    good = flights_table.slice(0, 100)
    pq.write_table(good, tmp_path / "a.parquet")
    pq.write_table(good.drop_columns(["origin", "hour"]), tmp_path / "b.parquet")
    bad_type = good.set_column(
        good.schema.get_field_index("flight"), "flight", pc_cast_str(good.column("flight"))
    )
    pq.write_table(bad_type, tmp_path / "c.parquet")
    with pytest.raises(
        SchemaMismatchError, match=r"b\.parquet: missing column\(s\) 'hour', 'origin'"
    ):
        score_parquet(flights_model, [tmp_path], tmp_path / "out.parquet")
    with pytest.raises(SchemaMismatchError) as err:
        score_parquet(flights_model, [tmp_path / "c.parquet"], tmp_path / "out.parquet")
    assert "c.parquet" in str(err.value) and "'flight'" in str(err.value)
    assert "expected integers, found string" in str(err.value)
    # int32 in one file and string in another cannot be read as one column.
    with pytest.raises(SchemaMismatchError, match=r"'flight' has incompatible types"):
        score_parquet(
            flights_model, [tmp_path / "a.parquet", tmp_path / "c.parquet"], tmp_path / "o.parquet"
        )
    assert leftovers(tmp_path) == [] and not os.path.exists(tmp_path / "out.parquet")


def test_a_value_that_does_not_fit_the_inputs_shared_type_names_its_column(
    flights_model, flights_table, tmp_path
):
    # int32 in one file and uint64 in the other are read as int64: 2**63 + 5 does not fit.
    t = flights_table.slice(0, 10)
    pq.write_table(t, tmp_path / "a.parquet")
    i = t.schema.get_field_index("flight")
    big = t.set_column(i, "flight", pa.array([2**63 + 5] * 10, pa.uint64()))
    pq.write_table(big, tmp_path / "b.parquet")
    with pytest.raises(InputDataError) as err:
        score_parquet(flights_model, [tmp_path], tmp_path / "out.parquet")
    assert str(err.value).startswith(
        f"{tmp_path / 'b.parquet'}: cannot read rows from row 0 on (the file has 10 rows): "
        "column 'flight' (uint64 in this file, int64 in the inputs): "
    )
    assert leftovers(tmp_path) == [] and not os.path.exists(tmp_path / "out.parquet")


def pc_cast_str(col):
    return col.cast(pa.string())


def test_map_renames_input_columns(flights_model, flights_table, tmp_path):
    t = flights_table.slice(0, 300).rename_columns(
        ["airline" if n == "carrier" else n for n in flights_table.column_names]
    )
    pq.write_table(t, tmp_path / "in.parquet")
    score_parquet(
        flights_model, [tmp_path / "in.parquet"], tmp_path / "out.parquet",
        mapping=parse_mapping(["carrier=airline"]), keep=["airline"],
    )  # fmt: skip
    expected = flights_model.predict(flights_table.slice(0, 300))
    np.testing.assert_array_equal(scores_of(tmp_path / "out.parquet"), expected)
    with pytest.raises(SchemaMismatchError, match=r"'airline', not column\(s\) of the model"):
        score_parquet(flights_model, [tmp_path / "in.parquet"], tmp_path / "x.parquet",
                      mapping={"airline": "carrier"})  # fmt: skip
    with pytest.raises(SchemaMismatchError, match="MODEL_COLUMN=INPUT_COLUMN"):
        parse_mapping(["carrier"])


def test_empty_input_writes_zero_rows_with_the_schema(flights_model, flights_table, tmp_path):
    pq.write_table(flights_table.slice(0, 0), tmp_path / "empty.parquet")
    summary = score_parquet(
        flights_model, [tmp_path / "empty.parquet"], tmp_path / "out.parquet", keep=["tailnum"]
    )
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.num_rows == 0 and out.schema.names == ["tailnum", "score"]
    assert out.schema.field("score").type == pa.float32()
    assert "0 rows (the input has no rows)" in str(summary)
    # Partitioned: one empty part file carries the schema.
    score_parquet(flights_model, [tmp_path / "empty.parquet"], tmp_path / "parts",
                  partitioned=True)  # fmt: skip
    assert os.listdir(tmp_path / "parts") == ["part-00000.parquet"]


def corrupt_row_group(path, row_group: int, column: str) -> None:
    """Overwrite the start of one column chunk of one row group (its first page header)."""
    meta = pq.ParquetFile(path).metadata
    index = meta.schema.to_arrow_schema().get_field_index(column)
    chunk = meta.row_group(row_group).column(index)
    offset = chunk.dictionary_page_offset or chunk.data_page_offset
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 64)


def test_file_corrupt_halfway_fails_with_file_and_rows_and_leaves_nothing(
    flights_model, flights_table, tmp_path
):
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(flights_table.slice(0, 1000), src / "a.parquet", row_group_size=250)
    pq.write_table(flights_table.slice(1000, 2000), src / "b.parquet", row_group_size=250)
    corrupt_row_group(src / "b.parquet", 5, "carrier")
    out = tmp_path / "out.parquet"
    with pytest.raises(InputDataError) as err:
        score_parquet(flights_model, [src], out, batch_size=256)
    msg = str(err.value)
    assert str(src / "b.parquet") in msg and "cannot read rows 1,250-1,499 (row group 5)" in msg
    assert not os.path.exists(out) and leftovers(tmp_path) == []


def test_truncated_file_is_refused_up_front(flights_model, flights_table, tmp_path):
    pq.write_table(flights_table.slice(0, 100), tmp_path / "a.parquet")
    data = (tmp_path / "a.parquet").read_bytes()
    (tmp_path / "b.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputDataError, match=r"b\.parquet: not a readable Parquet file"):
        score_parquet(flights_model, [tmp_path / "*.parquet"], tmp_path / "out.parquet")
    with pytest.raises(InputDataError, match="no such file or directory"):
        score_parquet(flights_model, [tmp_path / "nope.parquet"], tmp_path / "out.parquet")
    with pytest.raises(InputDataError, match="no file or directory matches"):
        score_parquet(flights_model, [tmp_path / "*.csv"], tmp_path / "out.parquet")


def test_a_column_name_used_twice_is_named(flights_model, flights_table, tmp_path):
    t = flights_table.slice(0, 10)
    t = pa.Table.from_arrays([*t.columns, t.column("month")], names=[*t.column_names, "month"])
    pq.write_table(t, tmp_path / "a.parquet")
    with pytest.raises(InputDataError, match=r"a\.parquet: column 'month' appears more than once"):
        score_parquet(flights_model, [tmp_path / "a.parquet"], tmp_path / "out.parquet")


def test_output_checks(flights_model, flights_table, tmp_path):
    pq.write_table(flights_table.slice(0, 10), tmp_path / "in.parquet")
    inp = [tmp_path / "in.parquet"]
    with pytest.raises(MemrecError, match="the output path is empty"):
        score_parquet(flights_model, inp, "", force=True)
    with pytest.raises(MemrecError, match="in.parquet is not a directory"):
        score_parquet(flights_model, inp, tmp_path / "in.parquet" / "out.parquet")
    with pytest.raises(MemrecError, match="names a directory; expected a file path"):
        score_parquet(flights_model, inp, f"{tmp_path / 'new'}{os.sep}")
    os.mkfifo(tmp_path / "fifo")  # as a device node would, e.g. /dev/null
    with pytest.raises(MemrecError, match="is a device, FIFO or socket, not a file"):
        score_parquet(flights_model, inp, tmp_path / "fifo", force=True)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
    with pytest.raises(MemrecError, match=r"output directory .*missing.* does not exist"):
        score_parquet(flights_model, inp, tmp_path / "missing" / "out.parquet")
    assert not os.path.exists(tmp_path / "missing")
    (tmp_path / "out.parquet").write_bytes(b"old")
    with pytest.raises(MemrecError, match="already exists; pass --force"):
        score_parquet(flights_model, inp, tmp_path / "out.parquet")
    assert (tmp_path / "out.parquet").read_bytes() == b"old"
    score_parquet(flights_model, inp, tmp_path / "out.parquet", force=True)
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 10
    # --force never deletes a directory that is not a directory of part files.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(MemrecError, match="other than part-NNNNN.parquet"):
        score_parquet(flights_model, inp, tmp_path / "mine", partitioned=True, force=True)
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_force_never_replaces_an_input(flights_model, flights_table, tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(flights_table.slice(0, 10), src)
    before = src.read_bytes()
    with pytest.raises(OutputPathError, match="the output would replace the input"):
        score_parquet(flights_model, [src], src, force=True)
    # Nor a directory of inputs named as --partitioned output (the names look like our parts).
    parts = tmp_path / "parts"
    parts.mkdir()
    pq.write_table(flights_table.slice(0, 10), parts / "part-00000.parquet")
    with pytest.raises(OutputPathError, match="the output would replace the input"):
        score_parquet(flights_model, [parts], parts, partitioned=True, force=True)
    assert src.read_bytes() == before and os.listdir(parts) == ["part-00000.parquet"]
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_output_directory_that_takes_no_files_is_refused_up_front(flights_model, tmp_path):
    # /proc takes no new files, even from root; refused before any input is read.
    with pytest.raises(OutputPathError, match="cannot write in /proc"):
        score_parquet(flights_model, [tmp_path / "absent.parquet"], "/proc/scores.parquet")


def test_a_failing_write_is_an_output_error_and_leaves_nothing(
    flights_model, flights_table, tmp_path, monkeypatch
):
    pq.write_table(flights_table.slice(0, 100), tmp_path / "in.parquet")

    def disk_full(self, table, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", disk_full)
    out = tmp_path / "out.parquet"
    with pytest.raises(OutputPathError, match="out.parquet: cannot write .*No space left"):
        score_parquet(flights_model, [tmp_path / "in.parquet"], out, batch_size=40)
    assert not os.path.exists(out) and leftovers(tmp_path) == []


def test_a_signal_just_after_the_temporary_is_created_leaves_nothing(
    flights_model, flights_table, tmp_path, monkeypatch
):
    # ``with`` runs __exit__ only once __enter__ has returned; a SIGTERM or Ctrl-C landing just
    # after the temporary file appeared used to leave it behind.
    pq.write_table(flights_table.slice(0, 10), tmp_path / "in.parquet")
    opened = ScoresWriter._open

    def open_then_interrupted(self, path):
        opened(self, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(ScoresWriter, "_open", open_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        score_parquet(flights_model, [tmp_path / "in.parquet"], tmp_path / "out.parquet")
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.parquet").exists()


def test_an_infinite_dense_value_is_refused_with_its_file_and_row(
    flights_model, flights_table, tmp_path
):
    t = flights_table.slice(0, 20)
    seats = t.column("seats").to_numpy(zero_copy_only=False).astype(np.float64)
    seats[13] = np.inf
    pq.write_table(t.set_column(t.schema.get_field_index("seats"), "seats", pa.array(seats)),
                   tmp_path / "in.parquet")  # fmt: skip
    out = tmp_path / "out.parquet"
    with pytest.raises(
        InputDataError, match=r"in.parquet: row 13: column 'seats' \(dense\) holds inf"
    ):
        score_parquet(flights_model, [tmp_path / "in.parquet"], out, batch_size=8)
    assert not os.path.exists(out) and leftovers(tmp_path) == []


def test_a_damaged_model_file_is_refused_unless_told_not_to_verify(
    flights_model_dir, flights_table, tmp_path
):
    # Same size, other bytes: only the checksum tells (the scores would be finite and wrong).
    model_dir = tmp_path / "model"
    shutil.copytree(flights_model_dir, model_dir)
    tokens = np.load(model_dir / "tokens.npy", mmap_mode="r+")
    tokens[0] += 1.0
    tokens.flush()
    del tokens
    pq.write_table(flights_table.slice(0, 10), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    with pytest.raises(InvalidModelError, match="tokens.npy: sha256 check failed"):
        score_parquet(model_dir, [tmp_path / "in.parquet"], out)
    assert not out.exists()
    score_parquet(model_dir, [tmp_path / "in.parquet"], out, verify=False, threads=1)
    assert pq.read_table(out).num_rows == 10


class _SecondBatchGoesWrong:
    """A model whose second predict call returns ``wrong(scores)`` (or raises in it)."""

    def __init__(self, model, wrong):
        self.model = model
        self.prep = model.prep
        self.wrong = wrong
        self.calls = 0

    def predict(self, batch):
        self.calls += 1
        scores = self.model.predict(batch)
        return self.wrong(scores.copy()) if self.calls == 2 else scores


def _interrupt(scores):
    raise KeyboardInterrupt  # as Ctrl-C would


def _nan_from_row_3(scores):
    scores[3:] = np.nan  # as NaN tables would give
    return scores


def test_scores_that_are_not_finite_are_an_error_not_an_output(
    flights_model, flights_table, tmp_path
):
    pq.write_table(flights_table.slice(0, 30), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    with pytest.raises(InvalidModelError, match=r"7 of the 10 scores of rows 10-19 .* not finite "
                       r"\(first at .*in.parquet: row 13\)"):  # fmt: skip
        model = _SecondBatchGoesWrong(flights_model, _nan_from_row_3)
        score_parquet(model, [tmp_path / "in.parquet"], out, batch_size=10)
    assert not os.path.exists(out) and leftovers(tmp_path) == []


def test_partitioned_output_and_force_replaces_parts(flights_model, flights_table, tmp_path):
    t = flights_table.slice(0, 1000)
    pq.write_table(t, tmp_path / "in.parquet")
    out = tmp_path / "parts"
    score_parquet(flights_model, [tmp_path / "in.parquet"], out, partitioned=True, part_rows=300,
                  batch_size=128, keep=["flight"])  # fmt: skip
    assert sorted(os.listdir(out)) == [f"part-0000{i}.parquet" for i in range(4)]
    got = pq.read_table(out)
    np.testing.assert_array_equal(got.column("score").to_numpy(), flights_model.predict(t))
    assert got.column("flight").to_pylist() == t.column("flight").to_pylist()
    score_parquet(flights_model, [tmp_path / "in.parquet"], out, partitioned=True, force=True)
    assert os.listdir(out) == ["part-00000.parquet"] and leftovers(tmp_path) == []


def test_ctrl_c_while_a_partitioned_output_is_replaced_leaves_one_output(
    flights_model, flights_table, tmp_path, monkeypatch
):
    # The old parts are moved aside, then the new ones into place: Ctrl-C in between waits
    # for both renames (and the old parts' removal), then interrupts.
    import memrec_infer.parquet_output as po

    pq.write_table(flights_table.slice(0, 300), tmp_path / "in.parquet")
    out = tmp_path / "out"
    score_parquet(flights_model, [tmp_path / "in.parquet"], out, partitioned=True)
    real = os.replace

    def replace_then_ctrl_c(src, dst):
        real(src, dst)
        if str(dst).endswith(".old"):
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(po.os, "replace", replace_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        score_parquet(flights_model, [tmp_path / "in.parquet"], out, partitioned=True,
                      force=True, batch_size=100, part_rows=100)  # fmt: skip
    assert sorted(os.listdir(out)) == [f"part-0000{i}.parquet" for i in range(3)]
    assert sorted(os.listdir(tmp_path)) == ["in.parquet", "out"]


def test_interrupted_run_leaves_no_output(flights_model, flights_table, tmp_path):
    pq.write_table(flights_table.slice(0, 1000), tmp_path / "in.parquet")
    model = _SecondBatchGoesWrong(flights_model, _interrupt)
    threads_before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        score_parquet(model, [tmp_path / "in.parquet"], tmp_path / "out.parquet", batch_size=100)
    assert not os.path.exists(tmp_path / "out.parquet") and leftovers(tmp_path) == []
    assert threading.active_count() == threads_before  # the reader thread was stopped


def test_readahead_keeps_order_propagates_errors_and_stops():
    assert list(readahead(iter(range(100)), depth=3)) == list(range(100))

    def failing():
        yield 1
        raise InputDataError("boom")

    it = readahead(failing())
    assert next(it) == 1
    with pytest.raises(InputDataError, match="boom"):
        next(it)
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    gen = readahead(endless(), depth=2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()  # must return promptly: the producer is blocked on a full queue
    n = len(produced)
    time.sleep(0.2)
    assert len(produced) == n


def test_progress_line_and_quiet():
    buf = io.StringIO()
    p = Progress(1000, stream=buf, interval=0.0)
    p.update(250)
    p.close()
    text = buf.getvalue()
    assert "250/1,000 rows" in text and "rows/s" in text and "ETA" in text
    assert text.endswith("\n")
    quiet = io.StringIO()
    q = Progress(1000, stream=quiet, enabled=False)
    q.update(1000)
    q.close()
    assert quiet.getvalue() == ""


def test_progress_message_goes_on_its_own_line():
    buf = io.StringIO()
    p = Progress(1000, stream=buf, interval=0.0)
    p.message("first")
    p.update(10)
    p.message("second")
    p.close()
    text = buf.getvalue()
    assert text.startswith("first\n\r[")  # before any bar: just the line
    assert "\x1b[K\nsecond\n\r[" in text  # after one: the bar's line is ended first
    assert text.endswith("\n")
    quiet = io.StringIO()
    Progress(1, stream=quiet, enabled=False).message("nothing")
    assert quiet.getvalue() == ""


def test_load_kernels_says_why_it_waits_only_when_slow(flights_model_dir, monkeypatch):
    model = load(flights_model_dir, threads=1)
    calls = []
    model.load_kernels([1, 1000], on_slow=lambda: calls.append("slow"), after_s=5.0)
    assert calls == []  # loaded (from the cache) well within 5 s
    assert all(k is not None for k in model.plan._kernels)  # both: B=1 and B=1000
    monkeypatch.setattr(model.plan, "load_kernels", lambda sizes: time.sleep(0.5))
    model.load_kernels([1], on_slow=lambda: calls.append("slow"), after_s=0.05)
    assert calls == ["slow"]


def test_scoring_loads_the_last_short_batch_kernel_up_front(
    flights_model_dir, flights_table, tmp_path, monkeypatch
):
    # 1000 + 10 rows in batches of 1000: the last batch takes the serial kernel, which a first
    # run would otherwise compile after the bar, unannounced.
    model = load(flights_model_dir, threads=1)
    asked = []
    monkeypatch.setattr(model.plan, "load_kernels", lambda sizes: asked.append(sorted(sizes)))
    pq.write_table(flights_table.slice(0, 1010), tmp_path / "in.parquet")
    score_parquet(model, [tmp_path / "in.parquet"], tmp_path / "out.parquet", batch_size=1000,
                  progress=False)  # fmt: skip
    assert asked == [[10, 1000]]


def test_a_slow_first_kernel_load_is_announced_before_scoring(
    flights_model_dir, flights_table, tmp_path, monkeypatch
):
    model = load(flights_model_dir, threads=1)
    load_kernels = model.plan.load_kernels

    def slow(sizes):  # as a first run on a machine, which compiles for about a minute
        time.sleep(1.3)
        load_kernels(sizes)

    monkeypatch.setattr(model.plan, "load_kernels", slow)
    pq.write_table(flights_table, tmp_path / "in.parquet")
    err = io.StringIO()
    score_parquet(model, [tmp_path / "in.parquet"], tmp_path / "out.parquet",
                  progress=True, stream=err)  # fmt: skip
    text = err.getvalue()
    assert text.startswith("compiling the feature prep and lookup kernels for this machine")
    bar = text.split("\n", 1)[1]  # the bar follows on its own line, its rate without the wait
    rate = int(bar.split(" rows/s")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert rate > flights_table.num_rows / 1.3
    quiet = io.StringIO()
    score_parquet(model, [tmp_path / "in.parquet"], tmp_path / "out.parquet", force=True,
                  progress=False, stream=quiet)  # fmt: skip
    assert quiet.getvalue() == ""
