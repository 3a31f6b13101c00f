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
from ..data.fingerprint import file_sha256
from ..errors import DataError, PrismrecError
from ..utils.io import check_out_dir, load_torch, make_dir, read_json, save_torch, write_json

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

    @property
    def identity(self) -> str:
        """The model identity: the SHA-256 of ``bundle.pt`` (recorded at export; computed for older bundles).
        Added items carry it, and a bundle loads only the items that its own model placed."""
        if not self.meta.get("identity"):
            self.meta["identity"] = file_sha256(self.path / TENSORS)
        return str(self.meta["identity"])

    def seen(self) -> sp.csr_matrix:
        a = self.arrays
        n_u, n_i = len(self.user_ids), len(self.item_ids)
        return sp.csr_matrix((np.ones(len(a["seen_indices"]), np.float32), a["seen_indices"], a["seen_indptr"]),
                             shape=(n_u, n_i))


# ---------------------------------------------------------------------------------------------- export
@torch.no_grad()
def factorize(model: Any, history: Any, check_users: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(user_emb, item_emb)`` from the model's ``user_item_vectors(history)`` (the scoring contract), with
    ``user_emb @ item_emb.T == model.score(users)`` verified on sample users. A model that does not score
    by a dot product of a user and an item vector cannot be exported."""
    model.eval()
    if not model.dot_product:
        model.user_item_vectors(history)  # raises the model's own explanation
    u, i = (t.detach().float() for t in model.user_item_vectors(history))
    model.prepare_scoring(history)
    n_users = len(u)
    users = torch.linspace(0, n_users - 1, min(check_users, n_users), device=u.device).long()
    want = model.score(users).float()
    got = u[users] @ i.T
    scale = want.abs().max().clamp_min(1e-6)
    if not torch.allclose(got / scale, want / scale, atol=1e-4):
        raise PrismrecError(f"model {type(model).__name__}: user x item vectors do not reproduce its scores "
                            f"(max error {float((got - want).abs().max()):.3g}); export refused.")
    return u.cpu().numpy(), i.cpu().numpy()


def export_bundle(run_dir: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write the serving bundle of a finished run (see the module docstring)."""
    from ..runs import load_run

    out = check_out_dir(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise PrismrecError(f"{out} already holds files; nothing is overwritten. Fix: choose a new --out or pass "
                            "--overwrite.")
    run = load_run(run_dir, device="cpu")
    ds, split, model, cfg = run.dataset, run.split, run.model, run.config
    history = split.history("all")
    user_emb, item_emb = factorize(model, history)
    seen = history.matrix
    seq_indptr, seq_items = history.sequences
    tr_indptr, tr_items = split.history("valid").sequences
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
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": cfg.model,
        "family": type(model).family,
        "config": cfg.to_run_dict(),
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
    make_dir(out, "--out folder")
    save_torch(out / TENSORS, arrays)
    meta["identity"] = file_sha256(out / TENSORS)
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
    fix = _reexport_fix(path)
    meta = read_json(path / META, fix=fix)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("format_version", 0), int) \
            or meta.get("format_version", 0) > FORMAT_VERSION:
        got = (meta.get("format"), meta.get("format_version")) if isinstance(meta, dict) else (type(meta).__name__, "?")
        raise DataError(f"unsupported bundle format {got[0]} v{got[1]} (this prismrec reads {FORMAT} "
                        f"v{FORMAT_VERSION}).", file=str(path / META), fix=fix)
    raw = load_torch(path / TENSORS, fix=fix)
    if not isinstance(raw, dict):
        raise DataError(f"holds a {type(raw).__name__}, not the bundle's dictionary of tensors.",
                        file=str(path / TENSORS), fix=fix)
    arrays = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in raw.items()}
    feats = raw.get("features", {})
    if not isinstance(feats, dict) or not all(isinstance(f, dict) and all(isinstance(t, torch.Tensor) for t in f.values())
                                              for f in feats.values()):
        raise DataError("'features' is not a {name: {values, available}} dictionary of tensors.",
                        file=str(path / TENSORS), fix=fix)
    arrays["features"] = {n: {k: t.numpy() for k, t in f.items()} for n, f in feats.items()}
    check_bundle(path, meta, arrays)
    return Bundle(path, meta, arrays)


def _reexport_fix(path: Path) -> str:
    return (f"re-export the bundle with prismrec export RUN_DIR --out {path} --overwrite ({META} and {TENSORS} "
            "are written together and must not be edited by hand).")


CSR_PAIRS = (("seen_indptr", "seen_indices"), ("train_indptr", "train_indices"), ("seq_indptr", "seq_items"),
             ("train_seq_indptr", "train_seq_items"))


def check_bundle(path: Path, meta: dict[str, Any], arrays: dict[str, Any]) -> None:
    """Refuse a bundle whose parts disagree (ids edited in bundle.json, a tensor of the wrong length), which
    would otherwise start and then answer 500: ids are unique strings, one per vector; every per-user
    offset array has one entry per user plus one and indexes existing items; feature rows match the items."""
    fix = _reexport_fix(path)
    mfile, tfile = str(path / META), str(path / TENSORS)

    def fail(message: str, file: str = mfile) -> None:
        raise DataError(message, file=file, fix=fix)

    for key in ("item_emb", "user_emb", "seen_indptr", "seen_indices"):
        if not isinstance(arrays.get(key), np.ndarray):
            fail(f"the tensor '{key}' is missing.", tfile)
    item_emb, user_emb = arrays["item_emb"], arrays["user_emb"]
    if item_emb.ndim != 2 or user_emb.ndim != 2 or item_emb.shape[1] != user_emb.shape[1]:
        fail(f"item_emb {tuple(item_emb.shape)} and user_emb {tuple(user_emb.shape)} are not two matrices of one "
             "dimension.", tfile)
    n_items, n_users, dim = int(item_emb.shape[0]), int(user_emb.shape[0]), int(item_emb.shape[1])
    for key, n, what in (("item_ids", n_items, "item"), ("user_ids", n_users, "user")):
        ids = meta.get(key)
        if not isinstance(ids, list):
            fail(f"'{key}' is {type(ids).__name__}, not a list of {what} ids.")
        bad = next((i for i, x in enumerate(ids) if not isinstance(x, str)), None)
        if bad is not None:
            fail(f"'{key}' entry {bad} is {ids[bad]!r}, not a string (ids are strings).")
        if len(ids) != n:
            fail(f"'{key}' lists {len(ids)} ids but {TENSORS} holds {n} {what} vectors (were the ids edited?).")
        first: dict[str, int] = {}
        for i, x in enumerate(ids):
            if x in first:
                fail(f"'{key}' lists the {what} id {x!r} twice (entries {first[x]} and {i}).")
            first[x] = i
    for key, n in (("n_items", n_items), ("n_users", n_users), ("dim", dim)):
        if key in meta and meta[key] != n:
            fail(f"'{key}' is {meta[key]!r} but {TENSORS} holds {n}.")
    for key in ("titles", "images"):
        v = meta.get(key)
        if v is not None and (not isinstance(v, list) or len(v) != n_items):
            fail(f"'{key}' has {len(v) if isinstance(v, list) else type(v).__name__} entries but the bundle has "
                 f"{n_items} items.")
    for ptr_key, idx_key in CSR_PAIRS:
        if ptr_key not in arrays and idx_key not in arrays:
            continue
        ptr, idx = np.asarray(arrays.get(ptr_key, [])), np.asarray(arrays.get(idx_key, []))
        if ptr.ndim != 1 or len(ptr) != n_users + 1:
            fail(f"'{ptr_key}' has {len(ptr) if ptr.ndim == 1 else tuple(ptr.shape)} entries but there are {n_users} "
                 f"users (it needs {n_users + 1}).", tfile)
        if idx.ndim != 1 or ptr[0] != 0 or (np.diff(ptr) < 0).any() or ptr[-1] != len(idx):
            fail(f"'{ptr_key}' is not a list of offsets into '{idx_key}' (starting at 0, non-decreasing, ending at "
                 f"{len(idx)}).", tfile)
        if len(idx) and (idx.min() < 0 or idx.max() >= n_items):
            fail(f"'{idx_key}' holds item index {int(idx.max() if idx.max() >= n_items else idx.min())}, outside "
                 f"0..{n_items - 1}.", tfile)
    for name, f in arrays["features"].items():
        values, avail = f.get("values"), f.get("available")
        if values is None or values.ndim != 2 or len(values) != n_items:
            fail(f"feature '{name}' has {None if values is None else tuple(values.shape)} values but the bundle has "
                 f"{n_items} items (one row per item).", tfile)
        if avail is not None and avail.shape != (n_items,):
            fail(f"feature '{name}' has {tuple(avail.shape)} availability flags for {n_items} items.", tfile)


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


def rebuild_model(bundle: Bundle) -> Any:
    """The trained model itself, rebuilt from the bundle alone (config, training matrix, features, weights)."""
    import pandas as pd

    from ..config import RunConfig
    from ..data.dataset import Modality
    from ..data.split import History
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
                        history=History(train, (a["train_seq_indptr"], a["train_seq_items"]), stage="train"))
    cls = MODELS.get(cfg.model)
    model = cls(cls.Config.build(cfg.params, where=cfg.model), data)
    model.load_state_dict(a["model_state"])
    model.eval()
    return model
