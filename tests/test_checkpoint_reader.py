"""The allow-listed checkpoint reader: real torch.save files in, NumPy out, no code run."""

from __future__ import annotations

import collections
import os
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from memrec_infer.checkpoint_reader import read_checkpoint
from memrec_infer.errors import CheckpointError


def _save(obj, path):
    torch.save(obj, path)
    return read_checkpoint(path)


def test_round_trip_dtypes_views_and_plain_data(tmp_path):
    base = torch.randn(6, 5)
    sd = collections.OrderedDict(
        f32=torch.randn(3, 4),
        i64=torch.arange(-7, 20, dtype=torch.int64),
        f64=torch.randn(2, dtype=torch.float64),
        half=torch.randn(3).half(),
        flag=torch.tensor([True, False]),
        scalar=torch.tensor(3.5),
        empty=torch.zeros(0, 4),
        transposed=base.t(),  # non-contiguous, shares base's storage
        sliced=base[2:5, 1:4],  # storage offset and strides
        stepped=base[::2, ::3],
        base=base,
        param=torch.nn.Parameter(torch.randn(2, 2)),
    )
    nested = {"config": {"dims": [1, 2.5, None, True, "x"], "pair": (3, "y")}, "sd": sd}
    got = _save(nested, tmp_path / "m.pt")

    assert got["config"] == {"dims": [1, 2.5, None, True, "x"], "pair": (3, "y")}
    assert isinstance(got["sd"], collections.OrderedDict)
    assert list(got["sd"]) == list(sd)
    for name, tensor in sd.items():
        arr = got["sd"][name]
        want = tensor.detach().numpy()
        assert isinstance(arr, np.ndarray), name
        assert arr.dtype == want.dtype and arr.shape == want.shape, name
        assert arr.flags.c_contiguous, name
        np.testing.assert_array_equal(arr, want, err_msg=name)


def test_module_state_dict_with_metadata(tmp_path):
    layer = torch.nn.Linear(3, 2)
    got = _save({"state_dict": layer.state_dict()}, tmp_path / "m.pt")["state_dict"]
    assert sorted(got) == ["bias", "weight"]
    np.testing.assert_array_equal(got["weight"], layer.weight.detach().numpy())


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _zip_with_pickle(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")


def test_malicious_os_system_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "x": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match=r"posix\.system|os\.system"):
        read_checkpoint(path)
    assert not marker.exists()
    # The payload is real: a plain unpickler runs it and creates its marker.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Exploit(control)))
    assert control.exists()


def test_hand_crafted_eval_refused(tmp_path):
    marker = tmp_path / "pwned"
    # GLOBAL builtins.eval, then call it with one string argument (protocol 0 opcodes).
    payload = b"cbuiltins\neval\n(Vopen(" + repr(str(marker)).encode() + b", 'w')\ntR."
    path = tmp_path / "evil.pt"
    _zip_with_pickle(path, payload)
    with pytest.raises(CheckpointError, match=r"builtins\.eval"):
        read_checkpoint(path)
    assert not marker.exists()


def test_storage_type_called_directly_refused(tmp_path):
    path = tmp_path / "odd.pt"
    _zip_with_pickle(path, b"ctorch\nFloatStorage\n(tR.")
    with pytest.raises(CheckpointError, match="FloatStorage"):
        read_checkpoint(path)


def test_legacy_pickle_refused(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"a": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy pickle"):
        read_checkpoint(path)


def test_not_a_zip_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="not a torch.save zip"):
        read_checkpoint(path)


def test_missing_file_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")


def test_truncated_zip_refused(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"w": torch.randn(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(path)


def test_corrupted_storage_refused(tmp_path):
    """A storage whose bytes are damaged inside an intact zip fails the zip's CRC check."""
    src = tmp_path / "m.pt"
    torch.save({"w": torch.randn(64)}, src)
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("/data/0"))
    # The local header is 30 bytes + name + extra (lengths at bytes 26..29; torch pads the
    # extra field for alignment); flip one byte of the data behind it.
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_len + extra_len + 3] ^= 0xFF
    src.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        read_checkpoint(src)


def test_storage_size_mismatch_refused(tmp_path):
    src = tmp_path / "m.pt"
    torch.save({"w": torch.randn(8)}, src)
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            raw = zin.read(item)
            zout.writestr(item.filename, raw[:-4] if item.filename.endswith("/data/0") else raw)
    with pytest.raises(CheckpointError, match="expected 8 x 4"):
        read_checkpoint(bad)


def test_big_endian_storage_is_byteswapped(tmp_path):
    src = tmp_path / "m.pt"
    want = np.arange(6, dtype=np.float32) * 1.5
    torch.save({"w": torch.from_numpy(want.copy())}, src)
    bad = tmp_path / "be.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            raw = zin.read(item)
            if item.filename.endswith("/byteorder"):
                raw = b"big"
            elif item.filename.endswith("/data/0"):
                raw = want.astype(">f4").tobytes()
            zout.writestr(item.filename, raw)
    got = read_checkpoint(bad)["w"]
    assert got.dtype == np.float32 and got.dtype.isnative
    np.testing.assert_array_equal(got, want)


def test_bfloat16_refused_with_advice(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(3, dtype=torch.bfloat16)}, path)
    with pytest.raises(CheckpointError, match=r"BFloat16Storage.*float32"):
        read_checkpoint(path)


def test_reading_does_not_import_torch(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"w": torch.randn(3)}, path)
    code = (
        "import sys; from memrec_infer.checkpoint_reader import read_checkpoint; "
        f"read_checkpoint({str(path)!r}); "
        "from memrec_infer.convert import convert; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
