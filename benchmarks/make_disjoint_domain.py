"""Derive a source domain that shares no item with a target: SOURCE's interactions on items the target
lacks (matched by a key column of both folders' items.tsv, e.g. the Amazon asin).

Used by the multi-domain transfer benchmark (benchmarks/transfer.sh, setting C): `scientific` without the 1,585
items of `scientific_mm` is a second source in the target's own product domain, with no target item.

Usage:
    python benchmarks/make_disjoint_domain.py ../shared/data/scientific ../shared/data/scientific_mm \
        bench_out/transfer/data/scientific_rest [--key asin] [--min-len 3]

Writes an MMRec folder: NAME.inter (userID itemID x_label seq_pos; each user's chronological order is
kept, the last item is test (2), the one before valid (1)), items.tsv, text_feat.npy (rows of the kept
items), and README.txt with the provenance and counts. Users with fewer than --min-len kept
interactions are dropped. Refuses to write into a folder that exists.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("source", type=Path)
    ap.add_argument("target", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--key", default="asin")
    ap.add_argument("--min-len", type=int, default=3)
    a = ap.parse_args()
    if a.out.exists():
        raise SystemExit(f"{a.out} exists; nothing is overwritten. Remove it or choose another folder.")
    src_items = pd.read_csv(a.source / "items.tsv", sep="\t", dtype={a.key: str})
    tgt_items = pd.read_csv(a.target / "items.tsv", sep="\t", dtype={a.key: str})
    inter_file = next(a.source.glob("*.inter"))
    inter = pd.read_csv(inter_file, sep="\t")
    keep_item = ~src_items[a.key].isin(set(tgt_items[a.key]))
    kept_ids = src_items.loc[keep_item, "itemID"].to_numpy()
    inter = inter[inter["itemID"].isin(kept_ids)]
    order = "seq_pos" if "seq_pos" in inter.columns else None
    inter = inter.sort_values(["userID", order] if order else ["userID"], kind="stable")
    lens = inter.groupby("userID")["itemID"].transform("size")
    inter = inter[lens >= a.min_len].copy()
    used = np.unique(inter["itemID"].to_numpy())
    new_item = {old: i for i, old in enumerate(used)}
    users = np.unique(inter["userID"].to_numpy())
    new_user = {old: u for u, old in enumerate(users)}
    pos = inter.groupby("userID").cumcount().to_numpy()
    n = inter.groupby("userID")["itemID"].transform("size").to_numpy()
    out = pd.DataFrame({"userID": inter["userID"].map(new_user).to_numpy(),
                        "itemID": inter["itemID"].map(new_item).to_numpy(),
                        "x_label": np.select([pos == n - 1, pos == n - 2], [2, 1], 0),
                        "seq_pos": pos})
    a.out.mkdir(parents=True)
    name = a.out.name
    out.to_csv(a.out / f"{name}.inter", sep="\t", index=False)
    items = src_items.set_index("itemID").loc[used].reset_index()
    items["itemID"] = np.arange(len(used))
    items.to_csv(a.out / "items.tsv", sep="\t", index=False)
    text = np.load(a.source / "text_feat.npy")
    np.save(a.out / "text_feat.npy", text[used])
    shared = set(items[a.key]) & set(tgt_items[a.key])
    assert not shared, "an item of the target is still in the derived source"
    info = {"source": str(a.source), "excluded_items_of": str(a.target), "key": a.key, "min_len": a.min_len,
            "users": len(users), "items": len(used), "interactions": len(out), "items_shared_with_target": 0}
    (a.out / "README.txt").write_text(
        f"Derived by benchmarks/make_disjoint_domain.py: {a.source.name} without the items of {a.target.name} "
        f"(matched by {a.key}); users with < {a.min_len} kept interactions dropped.\n" + json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))


if __name__ == "__main__":
    main()
