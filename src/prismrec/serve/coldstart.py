"""Items added while serving: raw text / image / price -> the model's features -> an item vector.

1. **Features.** Each modality of the bundle whose encoder is known (written by ``prismrec features``,
   or the MiniLM text features shipped with the datasets) is encoded from the request with that same
   encoder. A modality whose encoder is unknown (e.g. an unnamed CLIP release), or whose input the
   request lacks, is *missing* for the new item, exactly like a missing image in training.
2. **Item vector** (``--cold-start``, default ``knn``, measured better; see docs/serving.md).
   * ``model``, for LIRDRec (ID-free): the model's own item tower. The new item's layer-0 input is the trained
     modality MLPs and shared DCT branch applied to its features (missing modalities use the learned
     missing vectors), L2-normalised per channel; it has no training interactions, so user-item
     propagation leaves it unchanged; the item-item step adds ``sum_m w_m / k (x + sum of its k - 1
     nearest catalogue items' propagated vectors)`` over the modalities it has, as ``A_mm`` does for a
     catalogue item. Existing items' vectors are not changed (the new item is not added to their
     neighbour lists).
   * ``knn``, any model with features: the similarity-weighted mean of the final vectors of
     the ``k`` catalogue items nearest in feature space (cosine, per available modality, averaged).
     The response states the ``method``.
"""

from __future__ import annotations

import base64
import binascii
import threading
from typing import Any

import numpy as np
import torch

from ..errors import PrismrecError
from ..features.encoders import Encoder, PriceEncoder, build_encoder, resolve_encoder_spec
from .bundle import Bundle


class NotPlaceable(Exception):
    """The bundle's model cannot embed a new item from the given inputs (mapped to HTTP 409/422)."""


def decode_image(data: str | None) -> bytes | None:
    if not data:
        return None
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("image is not valid base64") from None


class ItemPlacer:
    NONE = ("this bundle's model has no item features with a known encoder, so it cannot place new items "
            "(extract features with prismrec features and retrain, or retrain with the new items)")

    def __init__(self, bundle: Bundle, item_emb: np.ndarray, *, knn_k: int = 10,
                 encoders: dict[str, Encoder] | None = None, mode: str = "knn"):
        self.bundle = bundle
        self.item_emb = item_emb
        self.knn_k = knn_k
        self.lock = threading.Lock()
        self.specs: dict[str, tuple[str, str, dict]] = {}
        for name, prov in (bundle.meta.get("modalities") or {}).items():
            spec = resolve_encoder_spec(prov)
            if spec is not None and name in bundle.arrays.get("features", {}):
                self.specs[name] = (spec[0], spec[1], prov.get("settings") or {})
        self.encoders: dict[str, Encoder] = dict(encoders or {})
        feats = bundle.arrays.get("features", {})
        self.catalogue = {}
        for name in self.specs:
            v, avail = feats[name]["values"], feats[name]["available"].astype(bool)
            nv = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            self.catalogue[name] = (nv.astype(np.float32), np.flatnonzero(avail))
        self.model = None
        self.method = "knn" if self.specs else "none"
        if mode not in ("knn", "model"):
            raise PrismrecError(f"unknown cold-start placement {mode!r}. Fix: knn or model.")
        if mode == "model" and self.specs:
            if bundle.meta.get("model") != "lirdrec" or "model_state" not in bundle.arrays:
                raise PrismrecError(f"cold-start placement 'model' needs a LIRDRec bundle (this is "
                                    f"{bundle.meta.get('model')}). Fix: --cold-start knn.")
            self._init_lirdrec()
            if self.method != "lirdrec":
                raise PrismrecError("cold-start placement 'model' does not support LIRDRec with dct_mode 2d or "
                                    "id_hybrid. Fix: --cold-start knn.")

    # -------------------------------------------------------------------------------------- features
    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "modalities": {n: {"kind": k, "encoder": s} for n, (k, s, _) in self.specs.items()},
                "unusable_modalities": sorted(set(self.bundle.meta.get("modalities") or {}) - set(self.specs))}

    def _encoder(self, name: str) -> Encoder:
        with self.lock:
            if name not in self.encoders:
                kind, spec, settings = self.specs[name]
                if kind == "price":
                    self.encoders[name] = PriceEncoder(spec, bins=int(settings.get("bins", 10)),
                                                       stats={k: v for k, v in settings.items() if k != "bins"})
                else:
                    self.encoders[name] = build_encoder(kind, spec)
            return self.encoders[name]

    def encode(self, *, text: str | None, image: bytes | None, price: float | None) -> dict[str, tuple[np.ndarray, bool]]:
        if self.method == "none":
            raise NotPlaceable(self.NONE)
        out: dict[str, tuple[np.ndarray, bool]] = {}
        for name, (kind, _, _) in self.specs.items():
            value: Any = {"text": text, "image": image, "caption": None, "price": price}[kind]
            if value is None or value == "":
                continue
            enc = self._encoder(name)
            if enc.dim != self.catalogue[name][0].shape[1]:
                raise NotPlaceable(f"the {kind} encoder {enc.name!r} gives {enc.dim}-d features but the bundle's "
                                   f"modality {name!r} is {self.catalogue[name][0].shape[1]}-d")
            v, ok = enc.encode([value])
            if ok[0]:
                out[name] = (v[0].astype(np.float32), True)
            elif kind == "image":
                reason = getattr(enc, "last_reasons", [None])[0]
                raise ValueError(f"image could not be decoded ({reason})")
        if not out:
            need = ", ".join(f"{k} (for modality {n})" for n, (k, _, _) in self.specs.items()) or "nothing usable"
            raise NotPlaceable(f"no feature could be built for this item; this model needs: {need}")
        return out

    # ------------------------------------------------------------------------------------------- knn
    def _neighbours(self, name: str, vec: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        cat, rows = self.catalogue[name]
        q = vec / max(float(np.linalg.norm(vec)), 1e-12)
        sims = cat[rows] @ q
        k = min(k, len(rows))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top])]
        return rows[top], sims[top]

    def place(self, feats: dict[str, tuple[np.ndarray, bool]]) -> np.ndarray:
        if self.method == "none":
            raise NotPlaceable(self.NONE)
        if self.method == "lirdrec":
            return self._place_lirdrec(feats)
        acc, n = np.zeros(self.item_emb.shape[1], np.float32), 0
        for name, (vec, _) in feats.items():
            rows, sims = self._neighbours(name, vec, self.knn_k)
            w = np.clip(sims, 0, None) + 1e-6
            acc += (w[:, None] * self.item_emb[rows]).sum(0) / w.sum()
            n += 1
        return acc / max(n, 1)

    # --------------------------------------------------------------------------------------- lirdrec
    def _init_lirdrec(self) -> None:
        import torch.nn.functional as F

        from ..graphs import propagate
        from .bundle import rebuild_model

        model = rebuild_model(self.bundle)
        if model.config.dct_mode == "2d" or model.config.id_hybrid:
            return  # a 2-D spectrum mixes items; ID embeddings do not exist for new items: use knn
        with torch.no_grad():
            n_u, n_ch, d = model.n_users, len(model.channels), model.config.embedding_size
            x = torch.cat([model.user_preference.view(n_u, n_ch, d), model.item_inputs()], dim=0)
            x = F.normalize(x, dim=-1).reshape(-1, n_ch * d)
            self.items_prop = propagate(model.adj, x, model.config.n_ui_layers, combine="sum")[n_u:].numpy()
        self.model = model
        self.method = "lirdrec"

    @torch.no_grad()
    def _place_lirdrec(self, feats: dict[str, tuple[np.ndarray, bool]]) -> np.ndarray:
        import scipy.fft
        import torch.nn.functional as F

        m = self.model
        chans, spectra, missing = [], [], []
        for name, table in m.features.items():
            vec, ok = feats.get(name, (np.zeros(table.dim, np.float32), False))
            t = torch.from_numpy(vec.reshape(1, -1).astype(np.float32))
            chans.append(m.projections[name](t, torch.tensor([ok])))
            s = vec if m.config.dct_mode == "none" else scipy.fft.dct(vec, type=2, norm="ortho")
            spectra.append(np.asarray(s, np.float32) if ok else np.zeros(table.dim, np.float32))
            missing.append(0.0 if ok else 1.0)
        lin, act, last = m.shared
        hidden = lin(torch.from_numpy(np.concatenate(spectra)[None])) + torch.tensor([missing]) @ m.shared_missing
        chans.append(last(act(hidden)))
        x = F.normalize(torch.stack(chans, dim=1), dim=-1).reshape(-1).numpy()
        k = m.config.knn_k
        hop, total = np.zeros_like(x), 0.0
        for name, w in m.mm_weights.items():
            if name not in feats or name not in self.catalogue:
                continue
            rows, _ = self._neighbours(name, feats[name][0], k - 1)
            hop += w / k * (x + self.items_prop[rows].sum(0))
            total += w
        if total > 0:
            hop /= total
        return (x + hop).astype(np.float32)

