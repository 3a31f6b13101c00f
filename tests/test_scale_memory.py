"""Memory at shop scale: features stay float16 and memory-mapped, and nothing builds a dense users x items
or items x items matrix (a training epoch, the kNN item graph and a full evaluation run under an address-
space limit smaller than either matrix), on the data of benchmarks/scale.py."""

from __future__ import annotations

import importlib.util
import json
import resource
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, cli_env

spec = importlib.util.spec_from_file_location("scale", REPO / "benchmarks" / "scale.py")
scale = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scale)  # type: ignore[union-attr]

USERS, ITEMS, INTERACTIONS = 40_000, 40_000, 200_000
LIMIT = 4 * 2**30  # address space of the child: a dense 40k x 40k float32 matrix alone is 6.4 GB


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return scale.generate(tmp_path_factory.mktemp("scale") / "shop", INTERACTIONS, USERS, ITEMS,
                          dims={"text": 16, "image": 24})


def test_generator_is_shop_like_and_fixed(shop, tmp_path):
    import pandas as pd

    inter = pd.read_csv(shop / "shop.inter", sep="\t")
    assert len(inter) == INTERACTIONS and not inter.duplicated(["userID", "itemID"]).any()
    per_user = inter.groupby("userID").size()
    assert per_user.min() >= 3 and per_user.max() > 20 * per_user.median()  # heavy-tailed activity
    top = inter["itemID"].value_counts()
    assert top.iloc[: ITEMS // 100].sum() > 0.1 * len(inter)  # best sellers: 1% of items, >10% of sales
    assert set(inter["x_label"]) == {0, 1, 2}
    feats = np.load(shop / "image_feat.npy", mmap_mode="r")
    assert feats.dtype == np.float16 and feats.shape == (ITEMS, 24)
    again = scale.generate(tmp_path / "shop", INTERACTIONS, USERS, ITEMS, dims={"text": 16, "image": 24})
    assert (again / "shop.inter").read_bytes() == (shop / "shop.inter").read_bytes()  # fixed seed


def test_features_stay_float16_and_mapped(shop):
    from prismrec.data import load_dataset
    from prismrec.config import DataConfig

    ds = load_dataset(str(shop), DataConfig())
    mod = ds.modalities["image"]
    assert mod.stored.dtype == np.float16
    assert isinstance(mod.stored, np.memmap) or isinstance(mod.stored.base, np.memmap)  # mapped, not read
    rows = mod.rows(np.array([3, 1, 4]))
    assert rows.dtype == np.float32 and np.allclose(rows, np.asarray(mod.stored[[3, 1, 4]], np.float32))
    blocks = list(mod.chunks(10_000))
    assert len(blocks) == 4 and all(b.dtype == np.float32 for _, b in blocks)
    assert mod._values is None  # nothing above cast the whole matrix


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


@pytest.mark.slow
def test_no_dense_users_x_items_or_items_x_items(shop):
    """FREEDOM (user-item propagation, a kNN items x items graph) and a full evaluation of every
    validation user against all 40k items, in a process that cannot hold a 40k x 40k float32 matrix."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--child", str(shop), "freedom",
                           "--max-batches", "5"], env=cli_env(), capture_output=True, text=True, timeout=600,
                          preexec_fn=_limit)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["items"] == ITEMS and row["users"] > 35_000 and row["eval_users"] > 30_000
    assert row["peak_rss_mb"] < LIMIT / 2**20
