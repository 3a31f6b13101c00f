"""prismrec features: encoders (text, image, price), missing-input rule, resumable cache, outputs that
plug into datasets, the manifest, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from prismrec.config import DataConfig
from prismrec.data import read_dataset
from prismrec.data.features_io import load_item_features
from prismrec.features.encoders import Encoder, PriceEncoder, build_encoder, resolve_encoder_spec
from prismrec.features.extract import extract, pick_column, read_items

from conftest import run_cli, write_mmrec


class CountingText(Encoder):
    """A fast stand-in text encoder: a hashed bag of words, counting the texts it encodes."""

    def __init__(self, dim: int = 8):
        super().__init__("text", "counting-bow", "1", dim, {})
        self.calls = 0

    def encode(self, inputs):
        self.calls += len(inputs)
        out = np.zeros((len(inputs), self.dim), np.float32)
        ok = np.zeros(len(inputs), bool)
        for r, t in enumerate(inputs):
            if isinstance(t, str) and t.strip():
                for w in t.lower().split():
                    out[r, sum(map(ord, w)) % self.dim] += 1
                out[r] /= np.linalg.norm(out[r])
                ok[r] = True
        return out, ok


def items_frame(n: int = 12) -> pd.DataFrame:
    return pd.DataFrame({"item_id": [f"i{j}" for j in range(n)],
                         "text": [f"item number {j} widget" if j % 5 else "" for j in range(n)],
                         "price": [str(1.5 * j + 1) if j % 4 else "n/a" for j in range(n)]})


def test_missing_inputs_are_counted_and_masked_never_zero_features(tmp_path):
    res = extract(items_frame(), CountingText(), column="text", modality="text", out=tmp_path / "t.npz",
                  cache_dir=None, batch_size=5)
    empty = [j for j in range(12) if j % 5 == 0]
    assert res.manifest["missing"] == {"empty_or_invalid_input": len(empty)}
    assert res.manifest["missing_examples"]["empty_or_invalid_input"] == [f"i{j}" for j in empty]
    assert not res.available[empty].any() and res.available.sum() == 12 - len(empty)
    assert res.manifest["missing_rule"]
    for key in ("encoder", "encoder_version", "dim", "created", "items_per_second"):
        assert key in res.manifest
    manifest = json.loads((tmp_path / "t.npz.manifest.json").read_text())
    assert manifest["dim"] == 8 and manifest["available"] == 12 - len(empty)


def test_cache_resumes_and_re_encodes_changed_inputs(tmp_path):
    items = items_frame()
    enc = CountingText()
    first = extract(items.iloc[:7], enc, column="text", modality="text", cache_dir=tmp_path / "cache",
                    flush_every=2)
    assert enc.calls == 7 and first.manifest["from_cache"] == 0
    enc2 = CountingText()  # a new process: only the cache files carry over
    items.loc[3, "text"] = "a changed description"
    second = extract(items, enc2, column="text", modality="text", cache_dir=tmp_path / "cache")
    assert enc2.calls == 12 - 7 + 1  # 5 new items + the changed one
    assert second.manifest["from_cache"] == 6
    np.testing.assert_allclose(second.values[:3], first.values[:3])
    fresh, _ = CountingText().encode(["a changed description"])
    np.testing.assert_allclose(second.values[3], fresh[0])


def test_price_encoder_standardises_and_bins():
    prices = ["1", "10", "100", None, "-3", "$1,000", "abc"]
    enc = PriceEncoder(bins=4).fit(prices)
    v, ok = enc.encode(prices)
    assert ok.tolist() == [True, True, True, False, False, True, False]
    assert v.shape == (7, 5) and (v[~ok] == 0).all()
    assert np.allclose(v[ok, 1:].sum(1), 1.0)  # exactly one bin
    assert v[0, 0] < v[1, 0] < v[2, 0] < v[5, 0]


def test_npz_output_attaches_to_a_dataset_by_raw_id(tmp_path):
    folder, _ = write_mmrec(tmp_path / "data", n_items=20)
    ds = read_dataset(folder, DataConfig())
    table = pd.DataFrame({"item_id": ds.item_ids.astype(str)[::-1],  # any order: ids carry the rows
                          "text": [f"product {i}" for i in ds.item_ids[::-1]]})
    res = extract(table, CountingText(), column="text", modality="text", out=tmp_path / "f.npz")
    mod = load_item_features(ds, "text", res.out)
    assert mod.available.all() and mod.provenance["encoder"] == "counting-bow"
    row = list(ds.item_ids).index(ds.item_ids[4])
    np.testing.assert_allclose(mod.values[row], CountingText().encode([f"product {ds.item_ids[4]}"])[0][0])


def test_npy_output_lands_in_the_dataset_folder_with_mask_and_manifest(tmp_path):
    folder, _ = write_mmrec(tmp_path / "data", n_items=20)
    ds = read_dataset(folder, DataConfig())
    text = [f"thing {i}" if k % 3 else "" for k, i in enumerate(ds.item_ids)]
    table = pd.DataFrame({"item_id": ds.item_ids.astype(str), "text": text})
    extract(table, CountingText(), column="text", modality="text", out=folder / "text_feat.npy",
            item_order=ds.item_ids)
    again = read_dataset(folder, DataConfig())
    mod = again.modalities["text"]
    assert mod.n_missing == sum(1 for t in text if not t)
    assert mod.provenance["encoder"] == "counting-bow"
    assert resolve_encoder_spec(mod.provenance) == ("text", "counting-bow")


def test_out_folder_gets_the_modality_file(tmp_path):
    """--out DIR (a folder, DIR/, or a name without suffix): DIR/<modality>_feat.npy for a whole dataset in order,
    DIR/<modality>.npz for an item table or --limit; a file name is kept as given."""
    from prismrec.features.extract import output_path

    folder, _ = write_mmrec(tmp_path / "data", n_items=20)
    pd.DataFrame({"itemID": range(20), "price": [1.0 + i for i in range(20)]}).to_csv(folder / "items.tsv",
                                                                                     sep="\t", index=False)
    r = run_cli("features", "--data", str(folder), "--modality", "price", "--out", f"{tmp_path / 'feats'}/")
    assert r.returncode == 0, str(r)
    out = tmp_path / "feats"
    assert {"price_feat.npy", "price_available.npy", "price_feat.npy.manifest.json", "features.json"} <= \
        {p.name for p in out.iterdir()}
    assert np.load(out / "price_feat.npy").shape == (20, 11) and f"wrote {out / 'price_feat.npy'}" in r.stdout
    # the folder now exists: without the slash it is still the folder; an item table gets an id-keyed file
    assert output_path(out, "price", row_aligned=True) == out / "price_feat.npy"
    assert output_path(out, "text", row_aligned=False) == out / "text.npz"
    assert output_path(tmp_path / "new", "image", row_aligned=True) == tmp_path / "new" / "image_feat.npy"
    assert output_path(tmp_path / "f.npz", "text", row_aligned=True) == tmp_path / "f.npz"
    assert output_path(str(tmp_path / "d") + "/", "text", row_aligned=False) == tmp_path / "d" / "text.npz"


def test_read_items_and_column_choice(tmp_path):
    p = tmp_path / "items.csv"
    pd.DataFrame({"asin": ["a", "b"], "title": ["x", "y"], "imUrl": ["p.jpg", ""]}).to_csv(p, index=False)
    t = read_items(p)
    assert list(t["item_id"]) == ["a", "b"]
    assert pick_column(t, "text", None) == "title" and pick_column(t, "image", None) == "imUrl"
    from prismrec.errors import PrismrecError

    with pytest.raises(PrismrecError, match="no column for price"):
        pick_column(t, "price", None)


# ------------------------------------------------------------------------------------------ real encoders
def _photos(folder):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for j in range(3):
        arr = (rng.random((90 + 10 * j, 120, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"p{j}.{'png' if j else 'jpg'}")
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    return ["p0.jpg", "p1.png", "p2.png", "broken.jpg", "missing.jpg", "", "https://example.com/x.jpg"]


def test_efficientnet_lite0_images_and_the_missing_rule(tmp_path):
    refs = _photos(tmp_path / "img")
    enc = build_encoder("image", image_root=tmp_path / "img")
    assert enc.dim == 1280 and enc.name == "efficientnet-lite0"
    table = pd.DataFrame({"item_id": [f"i{j}" for j in range(len(refs))], "image": refs})
    res = extract(table, enc, column="image", modality="image", out=tmp_path / "img.npz", image_root=tmp_path / "img",
                  batch_size=4)
    assert res.available.tolist() == [True, True, True, False, False, False, False]
    assert res.manifest["missing"] == {"unreadable": 1, "not_found": 1, "no_image": 1, "url_not_fetched": 1}
    np.testing.assert_allclose(np.linalg.norm(res.values[:3], axis=1), 1.0, rtol=1e-5)
    assert (res.values[3:] == 0).all()
    assert np.abs(res.values[0] - res.values[1]).max() > 1e-3  # different photos, different features


def test_default_text_encoder_reproduces_the_shipped_minilm_features(tmp_path):
    ds = read_dataset("demo", DataConfig())
    enc = build_encoder("text")
    assert enc.dim == 384 and "MiniLM" in enc.name
    v, ok = enc.encode(ds.items["text"].tolist()[:6])
    shipped = ds.modalities["text"].values[:6]
    cos = (v * shipped).sum(1) / np.linalg.norm(shipped, axis=1)
    assert ok.all() and cos.min() > 0.99


def test_features_cli_on_an_item_table(tmp_path):
    p = tmp_path / "items.tsv"
    items_frame().to_csv(p, sep="\t", index=False)
    r = run_cli("features", "--items", str(p), "--modality", "price", "--out", str(tmp_path / "price.npz"))
    assert r.returncode == 0, r
    assert "12 items -> 11-d" in r.stdout and "missing: empty_or_invalid_input 3" in r.stdout
    with np.load(tmp_path / "price.npz") as z:
        assert z["values"].shape == (12, 11) and z["available"].sum() == 9
    r = run_cli("features", "--items", str(p), "--modality", "sound", "--out", str(tmp_path / "x.npz"))
    assert r.returncode == 2 and "text, image, caption or price" in r.stderr


def test_captions_are_generated_from_images_then_encoded_as_text(tmp_path):
    from prismrec.features.encoders import CaptionEncoder

    refs = _photos(tmp_path / "img")

    def stub_captioner(images):  # a stand-in for a transformers image-to-text pipeline
        return [f"a photo {img.size[0]} by {img.size[1]}" for img in images]

    enc = CaptionEncoder(stub_captioner, CountingText(), root=tmp_path / "img")
    table = pd.DataFrame({"item_id": [f"i{j}" for j in range(len(refs))], "image": refs})
    res = extract(table, enc, column="image", modality="caption", out=tmp_path / "cap.npz")
    assert res.available.tolist() == [True, True, True, False, False, False, False]
    assert res.manifest["missing"]["unreadable"] == 1 and res.manifest["kind"] == "caption"
    assert enc.last_captions[-1] == "" and "captioner" in res.manifest["settings"]
    np.testing.assert_allclose(res.values[0], CountingText().encode(["a photo 120 by 90"])[0][0])
