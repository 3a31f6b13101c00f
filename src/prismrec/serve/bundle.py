"""Serving bundles: everything the service needs from a run, in two files, with no dataset or code pickles.

``prismrec export RUN_DIR --out BUNDLE_DIR`` writes::

    bundle.pt     tensors only (``torch.load(..., weights_only=True)``):
                    item_emb (I, d), user_emb (U, d)     score(u, i) = <user_emb[u], item_emb[i]>, exactly the
                                                         run's scores (checked at export on sample users)
                    seen_indptr, seen_indices            every user's known items (filtered when serving)
                    features {name: {values, available}} the item features the model saw (cold-start items
                                                         are placed by them)
                    model_state, train_indptr/indices,   what rebuilds the model itself (sequential session
                    seq_indptr, seq_items, train_items   scoring, LIRDRec's item tower for new items)
    bundle.json   format, model, family, the resolved run config, dataset, raw item and user ids, titles,
                  image references, per-modality provenance (encoder), test metrics, versions, date

User vectors of sequential models are their encoded full histories at export time.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .. import __version__
from ..errors import PrismrecError
from ..utils.io import load_torch, save_torch, write_json

FORMAT = "prismrec-bundle"
FORMAT_VERSION = 1
TENSORS = "bundle.pt"
META = "bundle.json"
IMAGE_COLUMNS = ("image", "image_path", "imUrl", "image_url")


@dataclass
class Bundle:
    """A loaded bundle: metadata (``meta``) and arrays (``arrays``, numpy)."""

    path: Path
    meta: dict[str, Any]
    arrays: dict[str, Any]

    @property
    def item_ids(self) -> list[str]:
        return self.meta["item_ids"]

    @property
    def user_ids(self) -> list[str]:
        return self.meta["user_ids"]

    @property
    def family(self) -> str:
        return self.meta.get("family", "general")

    def seen(self) -> sp.csr_matrix:
        a = self.arrays
        n_u, n_i = len(self.user_ids), len(self.item_ids)
        return sp.csr_matrix((np.ones(len(a["seen_indices"]), np.float32), a["seen_indices"], a["seen_indptr"]),
                             shape=(n_u, n_i))


# ---------------------------------------------------------------------------------------------- export
@torch.no_grad()
def factorize(model: Any, split: Any, n_users: int, check_users: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(user_emb, item_emb)`` with ``user_emb @ item_emb.T == model.score(users)`` (serving history).

    Works for models that cache ``(users, items)`` in ``prepare_scoring`` (LightGCN, FREEDOM, LIRDRec,
    ...), for BPR (bias folded into an extra dimension), for popularity, and for sequential models (the
    encoded full histories). The identity is verified on sample users; a model that is not a dot product
    of a user and an item vector cannot be exported.
    """
    model.eval()
    model.use_history("all", split)
    model.prepare_scoring()
    dev = model.device
    users = torch.arange(n_users, device=dev)
    if hasattr(model, "score_sequences") and hasattr(model, "encode"):
        items = model._items()
        chunks = [model.encode(torch.as_tensor(model.user_sequences(users[s:s + 1024].cpu().numpy()), device=dev))
                  for s in range(0, n_users, 1024)]
        u, i = torch.cat(chunks) if chunks else items.new_zeros(0, items.shape[1]), items
    elif isinstance(getattr(model, "_cache", None), tuple) and len(model._cache) == 2:
        u, i = model._cache
    elif hasattr(model, "user_embedding") and hasattr(model, "item_embedding"):
        u, i = model.user_embedding, model.item_embedding
        if getattr(model, "item_bias", None) is not None:
            u = torch.cat([u, torch.ones(len(u), 1, device=dev)], 1)
            i = torch.cat([i, model.item_bias.reshape(-1, 1)], 1)
    elif hasattr(model, "popularity"):
        u, i = torch.ones(n_users, 1, device=dev), model.popularity.reshape(-1, 1).float()
    else:
        raise PrismrecError(f"model {type(model).__name__} does not expose user and item vectors; it cannot be "
                            "exported for serving (only dot-product models can).")
    u, i = u.detach().float(), i.detach().float()
    sample = users[torch.linspace(0, n_users - 1, min(check_users, n_users), device=dev).long()]
    want = model.score(sample).float()
    got = u[sample] @ i.T
    scale = want.abs().max().clamp_min(1e-6)
    if not torch.allclose(got / scale, want / scale, atol=1e-4):
        raise PrismrecError(f"model {type(model).__name__}: user x item vectors do not reproduce its scores "
                            f"(max error {float((got - want).abs().max()):.3g}); export refused.")
    return u.cpu().numpy(), i.cpu().numpy()


def export_bundle(run_dir: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write the serving bundle of a finished run (see the module docstring)."""
    from ..runs import load_run

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PrismrecError(f"{out} already holds files; nothing is overwritten. Fix: choose a new --out or pass "
                            "--overwrite.")
    run = load_run(run_dir, device="cpu")
    ds, split, model, cfg = run.dataset, run.split, run.model, run.config
    user_emb, item_emb = factorize(model, split, ds.n_users)
    seen = (split.train + split.valid + split.test).tocsr()
    seen.sum_duplicates()
    seq_indptr, seq_items = split.sequences(("all",))
    tr_indptr, tr_items = split.sequences(("train",))
    arrays: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "item_emb": torch.from_numpy(np.ascontiguousarray(item_emb)),
        "user_emb": torch.from_numpy(np.ascontiguousarray(user_emb)),
        "seen_indptr": torch.from_numpy(seen.indptr.astype(np.int64)),
        "seen_indices": torch.from_numpy(seen.indices.astype(np.int64)),
        "train_indptr": torch.from_numpy(split.train.tocsr().indptr.astype(np.int64)),
        "train_indices": torch.from_numpy(split.train.tocsr().indices.astype(np.int64)),
        "seq_indptr": torch.from_numpy(seq_indptr.astype(np.int64)),
        "seq_items": torch.from_numpy(seq_items.astype(np.int64)),
        "train_seq_indptr": torch.from_numpy(tr_indptr.astype(np.int64)),
        "train_seq_items": torch.from_numpy(tr_items.astype(np.int64)),
        "train_items": torch.from_numpy(split.train_items().astype(np.int64)),
        "features": {n: {"values": torch.from_numpy(m.values.copy()), "available": torch.from_numpy(m.available.copy())}
                     for n, m in ds.modalities.items()},
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    images = None
    for col in IMAGE_COLUMNS:
        if col in ds.items.columns:
            images = ["" if not isinstance(v, str) else v for v in ds.items[col].tolist()]
            break
    from ..runs import _config_dict

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": cfg.model,
        "family": type(model).family,
        "config": _config_dict(cfg),
        "dataset": ds.name,
        "data_source": cfg.data_source,
        "run_dir": str(Path(run_dir).resolve()),
        "n_users": ds.n_users,
        "n_items": ds.n_items,
        "dim": int(item_emb.shape[1]),
        "item_ids": [str(x) for x in ds.item_ids],
        "user_ids": [str(x) for x in ds.user_ids],
        "titles": ds.item_titles(np.arange(ds.n_items)),
        "images": images,
        "image_root": _image_root(ds.source.get("path")) if images else None,
        "modalities": {n: _jsonable(m.provenance) for n, m in ds.modalities.items()},
        "metrics": {"test": run.metrics.get("test", {})},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"prismrec": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }
    out.mkdir(parents=True, exist_ok=True)
    save_torch(out / TENSORS, arrays)
    write_json(out / META, meta)
    return out


def _image_root(path: Any) -> str | None:
    """Relative image paths of the item table start at the dataset folder (or the folder of its file)."""
    if not path:
        return None
    p = Path(str(path)).resolve()
    return str(p if p.is_dir() else p.parent)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


# ------------------------------------------------------------------------------------------------ load
def load_bundle(path: str | Path) -> Bundle:
    """Read a bundle (tensors with ``weights_only=True``); arrays come back as numpy."""
    path = Path(path)
    if not (path / META).is_file() or not (path / TENSORS).is_file():
        raise PrismrecError(f"{path} is not a serving bundle (needs {META} and {TENSORS}). Fix: create one with "
                            "prismrec export RUN_DIR --out BUNDLE_DIR.")
    meta = json.loads((path / META).read_text())
    if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise PrismrecError(f"{path}: unsupported bundle format {meta.get('format')} v{meta.get('format_version')}.")
    raw = load_torch(path / TENSORS)
    arrays = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in raw.items()}
    arrays["features"] = {n: {k: t.numpy() for k, t in f.items()} for n, f in raw.get("features", {}).items()}
    return Bundle(path, meta, arrays)


def synthetic_bundle(out: str | Path, n_items: int, n_users: int = 1000, dim: int = 64, seed: int = 0,
                     seen_per_user: int = 20, clusters: bool = True) -> Path:
    """A bundle with random vectors (no model), for load tests of the service at catalogue scale.

    Items and users are drawn around ``sqrt(n_items)`` random centres (``clusters=True``), as learned
    embeddings are; ``clusters=False`` gives isotropic Gaussians, the worst case of any ANN index.
    """
    rng = np.random.default_rng(seed)
    if clusters:
        centres = rng.standard_normal((max(int(np.sqrt(n_items)), 1), dim)).astype(np.float32)
        items = centres[rng.integers(0, len(centres), n_items)] + 0.5 * rng.standard_normal((n_items, dim))
        users = centres[rng.integers(0, len(centres), n_users)] + 0.5 * rng.standard_normal((n_users, dim))
        items, users = (items / np.sqrt(dim)).astype(np.float32), (users / np.sqrt(dim)).astype(np.float32)
    else:
        items = rng.standard_normal((n_items, dim)).astype(np.float32) / np.sqrt(dim)
        users = rng.standard_normal((n_users, dim)).astype(np.float32) / np.sqrt(dim)
    seen = np.sort(rng.integers(0, n_items, (n_users, seen_per_user)), axis=1)
    indptr = np.arange(0, n_users * seen_per_user + 1, seen_per_user, dtype=np.int64)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_torch(out / TENSORS, {"format": FORMAT, "format_version": FORMAT_VERSION,
                               "item_emb": torch.from_numpy(items), "user_emb": torch.from_numpy(users),
                               "seen_indptr": torch.from_numpy(indptr),
                               "seen_indices": torch.from_numpy(seen.ravel().astype(np.int64)), "features": {}})
    write_json(out / META, {"format": FORMAT, "format_version": FORMAT_VERSION, "model": "synthetic",
                            "family": "general", "dataset": f"synthetic-{n_items}", "n_users": n_users,
                            "n_items": n_items, "dim": dim, "item_ids": [f"i{j}" for j in range(n_items)],
                            "user_ids": [f"u{j}" for j in range(n_users)],
                            "titles": [f"item {j}" for j in range(n_items)], "images": None, "modalities": {},
                            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return out


class _Sequences:
    """Stands in for a Split inside a rebuilt TrainingData: only the training sequences are known."""

    def __init__(self, indptr: np.ndarray, items: np.ndarray):
        self._seq = (indptr, items)

    def sequences(self, stages: tuple[str, ...] = ("train",)) -> tuple[np.ndarray, np.ndarray]:
        return self._seq


def rebuild_model(bundle: Bundle) -> Any:
    """The trained model itself, rebuilt from the bundle alone (config, training matrix, features, weights)."""
    import pandas as pd

    from ..config import RunConfig
    from ..data.dataset import Modality
    from ..data.training import TrainingData
    from ..models import MODELS

    a, meta = bundle.arrays, bundle.meta
    if "model_state" not in a:
        raise PrismrecError(f"bundle {bundle.path} holds no model weights (made without a run).")
    cfg = RunConfig.build(meta["config"], where=str(bundle.path / META))
    n_u, n_i = len(meta["user_ids"]), len(meta["item_ids"])
    train = sp.csr_matrix((np.ones(len(a["train_indices"]), np.float32), a["train_indices"], a["train_indptr"]),
                          shape=(n_u, n_i))
    mods = {n: Modality(n, f["values"], f["available"], dict(meta["modalities"].get(n, {})))
            for n, f in a["features"].items()}
    data = TrainingData(name=meta["dataset"], n_users=n_u, n_items=n_i, train=train, modalities=mods,
                        items=pd.DataFrame({"item_id": meta["item_ids"], "title": meta["titles"]}),
                        train_items=a["train_items"],
                        _split=_Sequences(a["train_seq_indptr"], a["train_seq_items"]))  # type: ignore[arg-type]
    cls = MODELS.get(cfg.model)
    model = cls(cls.Config.build(cfg.params, where=cfg.model), data)
    model.load_state_dict(a["model_state"])
    model.eval()
    return model
