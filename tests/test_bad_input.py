"""Bad input is refused with one paragraph that names the file (row, column) and the fix, never accepted
silently nor reported as an "unexpected" error (issue 15, point 6: silent acceptance, unclear errors).

Each test writes a tiny file in tmp_path and calls the reader (or writer) directly; a few run the real CLI
to check the exit status 2 and the one-paragraph message. A full or read-only disk is simulated with an
injected OSError (mounting a small tmpfs needs privileges, and root ignores chmod 0500).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import struct

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import CliProcess, write_mmrec
from prismrec.config import DataConfig
from prismrec.data import read_dataset
from prismrec.data.dataset import build_dataset
from prismrec.data.features_io import attach_features, save_item_features
from prismrec.errors import DataError, OutputError, PrismrecError
from prismrec.features.extract import extract_features, read_items
from prismrec.serve.bundle import export_bundle, load_bundle, synthetic_bundle
from prismrec.utils import io as pio
from prismrec.utils.io import load_torch, read_json, save_torch, user_os_error, write_json


def _read(path):
    return read_dataset(path, DataConfig())


def _mmrec(tmp_path, name="toy", **kw):
    folder, _ = write_mmrec(tmp_path, name, n_users=6, n_items=8, per_user=4, **kw)
    return folder


def _set_inter_row(folder, row: int, item: str) -> None:
    """Replace the itemID of data row ``row`` (1-based) of the MMRec file."""
    inter = folder / f"{folder.name}.inter"
    lines = inter.read_text().splitlines()
    cells = lines[row].split("\t")
    cells[1] = item
    lines[row] = "\t".join(cells)
    inter.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Three CLI commands on bad input, started together (each spends seconds importing torch)."""
    root = tmp_path_factory.mktemp("bad_cli")
    folder, _ = write_mmrec(root, "huge", n_users=6, n_items=8, per_user=4)
    _set_inter_row(folder, 3, "1e19")
    latin = root / "latin.csv"
    latin.write_bytes("item_id,title,price\ni1,Caf\xe9 cr\xe8me,3.5\n".encode("latin-1"))
    good = root / "items.csv"
    good.write_text("item_id,price\ni1,1.0\ni2,2.0\n")
    (root / "a_file").write_text("not a folder")
    procs = {
        "huge_id": CliProcess("train", "--model", "bpr", "--data", str(folder), "--out", str(root / "run")),
        "latin": CliProcess("features", "--modality", "price", "--items", str(latin), "--out", str(root / "p.npz")),
        "out_under_file": CliProcess("features", "--modality", "price", "--items", str(good),
                                     "--out", str(root / "a_file" / "price.npz")),
    }
    yield {"root": root, "folder": folder, "latin": latin, **procs}
    for p in procs.values():
        p.stop()


def _one_paragraph_error(r) -> str:
    assert r.returncode == 2, str(r)
    assert "unexpected" not in r.stderr and "Traceback" not in r.stderr, str(r)
    return r.stderr


def test_cli_mmrec_id_1e19_exit_2_names_file_row_column(cli):
    err = _one_paragraph_error(cli["huge_id"].result())
    assert "huge.inter" in err and "row 3" in err and "itemID" in err and "too large" in err
    assert "Fix:" in err and "-8446744073709551616" not in err


def test_cli_latin1_items_file_exit_2_says_utf8(cli):
    err = _one_paragraph_error(cli["latin"].result())
    assert "latin.csv" in err and "not UTF-8" in err and "iconv" in err


def test_cli_features_out_under_a_file_exit_2(cli):
    err = _one_paragraph_error(cli["out_under_file"].result())
    assert "a_file is a file, not a folder" in err and "Fix:" in err


# ----------------------------------------------------------------------------- silently accepted before
@pytest.mark.parametrize("name,text,column", [
    ("log.csv", "user,item,item\nu1,i1,i2\nu2,i2,i3\n", "item"),
    ("log.tsv", "user\titem\tuser\nu1\ti1\tu9\nu2\ti2\tu8\n", "user"),
])
def test_duplicated_header_column_csv_tsv(tmp_path, name, text, column):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=f"column '{column}' appears twice in the header") as e:
        _read(tmp_path / name)
    assert name in str(e.value) and "Fix:" in str(e.value)


def test_duplicated_header_column_mmrec(tmp_path):
    folder = tmp_path / "dup"
    folder.mkdir()
    (folder / "dup.inter").write_text("userID\titemID\titemID\n0\t0\t1\n1\t1\t0\n")
    with pytest.raises(DataError, match="column 'itemID' appears twice") as e:
        _read(folder)
    assert "dup.inter" in str(e.value)


@pytest.mark.parametrize("column,value,message", [
    ("rating", "inf", "rating value 'inf' is not a finite number"),
    ("rating", "-inf", "rating value '-inf' is not a finite number"),
    ("rating", "-2", "rating value '-2' is negative"),
    ("timestamp", "inf", "timestamp value inf is not a finite number"),
])
def test_inf_or_negative_ratings_and_inf_timestamps(tmp_path, column, value, message):
    p = tmp_path / "log.csv"
    p.write_text(f"user,item,{column}\nu1,i1,5\nu2,i2,{value}\nu3,i1,4\n")
    with pytest.raises(DataError, match=message) as e:
        _read(p)
    text = str(e.value)
    assert "log.csv" in text and "row 2" in text and f"column '{column}'" in text and "Fix:" in text


def test_negative_timestamps_are_still_valid_unix_times(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("user,item,timestamp\nu1,i1,-86400\nu2,i2,0\n")
    assert _read(p).interactions["timestamp"].min() == -86400


def test_inf_rating_in_an_mmrec_file(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "r.inter").write_text("userID\titemID\trating\n0\t0\t5\n1\t1\tinf\n")
    with pytest.raises(DataError, match="not a finite number") as e:
        _read(folder)
    assert "r.inter" in str(e.value) and "row 2" in str(e.value)


def test_mmrec_id_1e19_is_refused_not_wrapped(tmp_path):
    folder = _mmrec(tmp_path)
    _set_inter_row(folder, 3, "1e19")
    with pytest.raises(DataError, match=r"id 1e\+19 is too large") as e:
        _read(folder)
    assert "toy.inter" in str(e.value) and "row 3" in str(e.value) and "column 'itemID'" in str(e.value)


def test_mmrec_id_1e9_is_refused_not_a_memory_error(tmp_path):
    folder = _mmrec(tmp_path)
    _set_inter_row(folder, 2, "1000000000")
    with pytest.raises(DataError, match="id 1000000000 is too large") as e:
        _read(folder)
    assert "row 2" in str(e.value) and "data.format=tabular" in str(e.value)


def test_mmrec_ids_up_to_the_catalogue_size_stay_accepted(tmp_path):
    """A sparse id is fine when the feature file (or items.tsv) holds that many rows."""
    folder = _mmrec(tmp_path)
    _set_inter_row(folder, 2, "4999")
    np.save(folder / "image_feat.npy", np.ones((5000, 2), np.float32))
    assert _read(folder).n_items == 5000


def test_duplicate_ids_in_items_tsv(tmp_path):
    folder = _mmrec(tmp_path)
    (folder / "items.tsv").write_text("itemID\ttitle\n0\ta\n1\tb\n0\tc\n")
    with pytest.raises(DataError, match="item id '0' appears twice") as e:
        _read(folder)
    assert "items.tsv" in str(e.value) and "row 3" in str(e.value) and "column 'itemID'" in str(e.value)


@pytest.mark.parametrize("values,message", [
    (np.ones((8, 3), np.complex64), "complex dtype complex64"),
    (np.ones((8, 0), np.float32), "0 columns"),
])
def test_complex_or_zero_column_feature_matrix(tmp_path, values, message):
    folder = _mmrec(tmp_path)
    np.save(folder / "image_feat.npy", values)
    with pytest.raises(DataError, match=message) as e:
        _read(folder)
    assert "image_feat.npy" in str(e.value) and "Fix:" in str(e.value)


@pytest.mark.parametrize("suffix,values,message", [
    (".npy", np.ones((8, 2), np.complex128), "complex dtype"),
    (".npy", np.ones((8, 0), np.float32), "0 columns"),
    (".npz", np.ones((8, 2), np.complex64), "complex dtype"),
    (".npz", np.ones((8, 0), np.float32), "0 columns"),
])
def test_complex_or_zero_column_extra_features(tmp_path, suffix, values, message):
    ds = build_dataset("t", pd.DataFrame({"user": [f"u{i}" for i in range(8)], "item": [f"i{i}" for i in range(8)]}))
    path = tmp_path / f"extra{suffix}"
    if suffix == ".npy":
        np.save(path, values)
    else:
        np.savez(path, ids=np.asarray(ds.item_ids, dtype=str), values=values)
    with pytest.raises(DataError, match=message) as e:
        attach_features(ds, {"extra": str(path)})
    assert f"extra{suffix}" in str(e.value)


def test_duplicate_ids_in_extra_features_npz(tmp_path):
    ds = build_dataset("t", pd.DataFrame({"user": ["u0", "u1"], "item": ["i0", "i1"]}))
    path = save_item_features(tmp_path / "f.npz", ["i0", "i1", "i0"], np.ones((3, 2), np.float32))
    with pytest.raises(DataError, match="item id 'i0' appears twice") as e:
        attach_features(ds, {"f": str(path)})
    assert "f.npz" in str(e.value) and "row 3" in str(e.value)


def test_duplicate_ids_in_features_items_file(tmp_path):
    p = tmp_path / "items.csv"
    p.write_text("item_id,price\na,1\nb,2\na,3\n")
    with pytest.raises(DataError, match="item id 'a' appears twice") as e:
        read_items(p)
    assert "items.csv" in str(e.value) and "row 3" in str(e.value) and "column 'item_id'" in str(e.value)


# ------------------------------------------------------------------------------- unclear errors before
def _npy_with_header(header: bytes) -> bytes:
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header + b"\0" * 16


@pytest.mark.parametrize("content,message", [
    ("object", "holds Python objects"),
    (pickle.dumps([[1.0, 2.0]] * 8), r"not a \.npy file"),
    (_npy_with_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }" + b" " * 20000 + b"\n"),
     "header is damaged or too large"),
    (b"\x93NUMPY\x01\x00\x10\x00{garbage\n  \n     ", "header is damaged or too large"),
    ("truncated", "the file is truncated"),
])
def test_pickle_or_bad_header_in_npy(tmp_path, content, message):
    folder = _mmrec(tmp_path)
    path = folder / "image_feat.npy"
    if content == "object":
        np.save(path, np.array([{"a": 1}] * 8, dtype=object), allow_pickle=True)
    elif content == "truncated":
        np.save(path, np.ones((8, 3), np.float32))
        path.write_bytes(path.read_bytes()[:-10])
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        _read(folder)
    assert "image_feat.npy" in str(e.value) and "Fix:" in str(e.value)


def test_pickle_in_an_availability_mask_and_an_extra_npz(tmp_path):
    folder = _mmrec(tmp_path, features=4)
    np.save(folder / "image_available.npy", np.array([True] * 8, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="holds Python objects") as e:
        _read(folder)
    assert "image_available.npy" in str(e.value)
    ds = build_dataset("t", pd.DataFrame({"user": ["u0"], "item": ["i0"]}))
    np.savez(tmp_path / "x.npz", ids=np.array(["i0"], dtype=object), values=np.ones((1, 2), np.float32))
    with pytest.raises(DataError, match="pickles") as e:
        attach_features(ds, {"x": str(tmp_path / "x.npz")})
    assert "x.npz" in str(e.value)


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_model_pt(tmp_path):
    path = save_torch(tmp_path / "model.pt", {"w": torch.zeros(64)})
    assert torch.equal(load_torch(path)["w"], torch.zeros(64))
    _truncate(path)
    with pytest.raises(DataError, match="truncated or damaged") as e:
        load_torch(path)
    assert "model.pt" in str(e.value) and "Fix:" in str(e.value)


def test_truncated_metrics_json(tmp_path):
    path = write_json(tmp_path / "metrics.json", {"test": {"recall@10": 0.1}, "model": "bpr"})
    _truncate(path, 0.6)
    with pytest.raises(DataError, match="not valid JSON") as e:
        read_json(path)
    assert "metrics.json" in str(e.value) and " at line " in str(e.value) and "--resume" in str(e.value)


@pytest.fixture
def bundle(tmp_path):
    path = synthetic_bundle(tmp_path / "bundle", n_items=10, n_users=4, dim=4, seen_per_user=2)
    assert load_bundle(path).meta["n_items"] == 10  # intact: it loads
    return path


def test_truncated_bundle_pt(bundle):
    _truncate(bundle / "bundle.pt")
    with pytest.raises(DataError, match="truncated or damaged") as e:
        load_bundle(bundle)
    assert "bundle.pt" in str(e.value) and "prismrec export" in str(e.value)


def test_truncated_bundle_json(bundle):
    _truncate(bundle / "bundle.json")
    with pytest.raises(DataError, match="not valid JSON") as e:
        load_bundle(bundle)
    assert "bundle.json" in str(e.value) and "prismrec export" in str(e.value)


def test_empty_features_items_file(tmp_path):
    for name, text in (("empty.csv", ""), ("header_only.csv", "item_id,price\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match="empty|no rows") as e:
            read_items(tmp_path / name)
        assert name in str(e.value) and "Fix:" in str(e.value)


def test_latin1_features_items_file(tmp_path):
    p = tmp_path / "latin.tsv"
    p.write_bytes("item_id\ttitle\ni1\tCaf\xe9\ni2\tna\xefve\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text") as e:
        read_items(p)
    assert "latin.tsv" in str(e.value) and "iconv" in str(e.value)


def _a_file(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    return f


def test_train_out_under_a_file(tmp_path):
    from prismrec.runs import train_run

    f = _a_file(tmp_path)
    with pytest.raises(OutputError, match="is a file, not a folder") as e:
        train_run("bpr", str(_mmrec(tmp_path)), f / "run")
    assert str(f) in str(e.value) and "Fix:" in str(e.value)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        train_run("bpr", str(_mmrec(tmp_path)), f)  # --out is the file itself


def test_features_out_under_a_file(tmp_path):
    f = _a_file(tmp_path)
    (tmp_path / "items.csv").write_text("item_id,price\na,1\nb,2\n")
    with pytest.raises(OutputError, match="is a file, not a folder") as e:
        extract_features("price", f / "sub" / "price.npz", items=tmp_path / "items.csv")
    assert str(f) in str(e.value)
    assert not list(tmp_path.glob("**/.prismrec-cache"))  # refused before any work


def test_export_out_under_a_file(tmp_path):
    f = _a_file(tmp_path)
    with pytest.raises(OutputError, match="is a file, not a folder") as e:
        export_bundle(tmp_path / "some_run", f / "bundle")  # checked before the run is loaded
    assert str(f) in str(e.value)


# ---------------------------------------------------------------------------- full or read-only disk
def _no_temp_files(folder) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_full_disk_when_writing(tmp_path, monkeypatch):
    target = write_json(tmp_path / "metrics.json", {"old": True})

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pio.os, "fsync", full)
    with pytest.raises(OutputError, match="the disk is full") as e:
        write_json(target, {"new": True})
    assert str(target) in str(e.value) and "Fix: free space" in str(e.value)
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC  # services still see an OSError
    assert json.loads(target.read_text()) == {"old": True} and _no_temp_files(tmp_path)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_read_only_disk_when_writing(tmp_path, monkeypatch, code):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path))

    monkeypatch.setattr(pio.tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match="is not writable") as e:
        save_torch(tmp_path / "model.pt", {"w": torch.zeros(2)})
    assert str(tmp_path / "model.pt") in str(e.value) and "Fix:" in str(e.value)
    assert e.value.errno == code and not (tmp_path / "model.pt").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_folder_for_real(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="is not writable"):
            write_json(ro / "x.json", {})
    finally:
        ro.chmod(0o700)


def test_os_errors_outside_the_writers_become_one_paragraph():
    full = user_os_error(OSError(errno.ENOSPC, "No space left on device", "/data/run/log.txt"))
    assert isinstance(full, PrismrecError) and "the disk is full" in str(full) and "/data/run/log.txt" in str(full)
    ro = user_os_error(OSError(errno.EROFS, "Read-only file system", "/mnt/x/y"))
    assert "not writable" in str(ro)
    assert user_os_error(OSError(errno.ECONNRESET, "reset")) is None  # not the user's to fix: stays unexpected


# ------------------------------------------------------------------------------ edited serving bundle
@pytest.mark.parametrize("edit,message", [
    (lambda m: m["item_ids"].pop(), "'item_ids' lists 9 ids but bundle.pt holds 10 item vectors"),
    (lambda m: m["item_ids"].append("extra"), "'item_ids' lists 11 ids"),
    (lambda m: m["item_ids"].__setitem__(3, "i1"), "'item_ids' lists the item id 'i1' twice"),
    (lambda m: m["item_ids"].__setitem__(2, 7), "'item_ids' entry 2 is 7, not a string"),
    (lambda m: m.__setitem__("item_ids", "i0,i1"), "'item_ids' is str, not a list"),
    (lambda m: m["user_ids"].pop(), "'user_ids' lists 3 ids but bundle.pt holds 4 user vectors"),
    (lambda m: m["titles"].pop(), "'titles' has 9 entries"),
])
def test_bundle_with_edited_ids_is_refused_at_load(bundle, edit, message):
    meta = json.loads((bundle / "bundle.json").read_text())
    edit(meta)
    (bundle / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=message.replace("(", r"\(")) as e:
        load_bundle(bundle)
    assert "bundle.json" in str(e.value) and "prismrec export" in str(e.value)


def test_bundle_with_inconsistent_tensors_is_refused_at_load(bundle):
    arrays = torch.load(bundle / "bundle.pt", weights_only=True)
    arrays["seen_indptr"] = arrays["seen_indptr"][:-1]
    arrays["features"] = {"image": {"values": torch.ones(9, 3), "available": torch.ones(9, dtype=torch.bool)}}
    save_torch(bundle / "bundle.pt", arrays)
    with pytest.raises(DataError, match="'seen_indptr' has 4 entries but there are 4 users") as e:
        load_bundle(bundle)
    assert "bundle.pt" in str(e.value)
    arrays["seen_indptr"] = torch.tensor([0, 2, 4, 6, 8])
    save_torch(bundle / "bundle.pt", arrays)
    with pytest.raises(DataError, match="feature 'image' has"):
        load_bundle(bundle)
