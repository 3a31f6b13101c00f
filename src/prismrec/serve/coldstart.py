"""Items added while serving: raw text / image / price -> the model's features -> an item vector.

1. **Features.** Each modality of the bundle whose encoder is known (written by ``prismrec features``,
   or the MiniLM text features shipped with the datasets) is encoded from the request with that same
   encoder. A modality whose encoder is unknown (e.g. an unnamed CLIP release), or whose input the
   request lacks, is *missing* for the new item, exactly like a missing image in training.
2. **Item vector** (``--cold-start``, default ``knn``, measured better; see docs/serving.md).
   * ``model``: the model's own ``place_items`` (the scoring contract), for models that place new items
     from their content (LIRDRec's ID-free item tower; see ``LIRDRec.place_items``). Existing items'
     vectors are not changed.
   * ``knn``, any model with features: the similarity-weighted mean of the final vectors of
     the ``k`` catalogue items nearest in feature space (cosine, per available modality, averaged).
     The response states the ``method``.
"""

from __future__ import annotations

import base64
import logging
import binascii
import threading
from typing import Any

import numpy as np
import torch

from ..errors import PrismrecError
from ..features.encoders import Encoder, PriceEncoder, build_encoder, resolve_encoder_spec
from .bundle import Bundle


log = logging.getLogger("prismrec")


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


class UnsupportedImage(ValueError):
    """The uploaded bytes are not an image we accept (mapped to HTTP 415)."""


MAX_IMAGE_PIXELS = 40_000_000  # 40 MP: larger images are refused before their pixels are decoded
MAX_IMAGE_SIDE = 20_000


def sanitize_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[bytes, str]:
    """Decode an uploaded image and re-encode it (PNG, or JPEG for photos), so that only pixels we decoded
    are ever stored or served. Refuses (:class:`UnsupportedImage`) what Pillow cannot identify and images
    whose header announces more than ``max_pixels`` pixels (decompression bombs), before decoding them."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise UnsupportedImage("image uploads need Pillow on the server (pip install pillow)") from None
    import io
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w < 1 or h < 1 or w > MAX_IMAGE_SIDE or h > MAX_IMAGE_SIDE or w * h > max_pixels:
                raise UnsupportedImage(f"image of {w} x {h} pixels is larger than the {max_pixels:,}-pixel limit")
            img.load()
    except UnsupportedImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnsupportedImage(f"image could not be decoded: the upload is not an image we accept "
                               f"({exc.__class__.__name__})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise UnsupportedImage(f"the image could not be decoded ({exc.__class__.__name__}: {exc})") from None
    photo = img.format == "JPEG"
    img = img.convert("RGB" if photo or img.mode not in ("RGBA", "LA", "P") else "RGBA")
    out = io.BytesIO()
    img.save(out, format="JPEG" if photo else "PNG", **({"quality": 92} if photo else {}))
    return out.getvalue(), "image/jpeg" if photo else "image/png"


class ItemPlacer:
    NONE = ("this bundle's model has no item features with a known encoder, so it cannot place new items "
            "(extract features with prismrec features and retrain, or retrain with the new items)")

    def __init__(self, bundle: Bundle, item_emb: np.ndarray, *, knn_k: int = 10,
                 encoders: dict[str, Encoder] | None = None, mode: str = "knn", model: Any = None):
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
            if "model_state" not in bundle.arrays:
                raise PrismrecError(f"cold-start placement 'model' needs the model's weights, and bundle "
                                    f"{bundle.path} has none. Fix: --cold-start knn.")
            if model is None:
                from .bundle import rebuild_model

                model = rebuild_model(bundle)
            if not model.can_place_items():
                raise PrismrecError(
                    f"cold-start placement 'model' needs a LIRDRec bundle or another model that places new items "
                    f"from their content (this is {bundle.meta.get('model')}"
                    f"{', whose dct_mode 2d or id_hybrid gives items no content-only vector' if bundle.meta.get('model') == 'lirdrec' else ''}"
                    "). Fix: --cold-start knn.")
            self.model = model
            self.method = str(bundle.meta.get("model"))

    # -------------------------------------------------------------------------------------- features
    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "modalities": {n: {"kind": k, "encoder": s} for n, (k, s, _) in self.specs.items()},
                "unusable_modalities": sorted(set(self.bundle.meta.get("modalities") or {}) - set(self.specs))}

    def warm(self) -> None:
        """Build every usable encoder now (at start), so that the first PUT is not slowed by model loading;
        an encoder that cannot be built is reported here and again, as an error, by the PUT that needs it."""
        for name in self.specs:
            try:
                self._encoder(name)
            except Exception as exc:  # noqa: BLE001 - reported, and raised again at request time
                log.warning("the encoder of modality %r could not be loaded at start (%s)", name, exc)

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
        if self.model is not None:
            batch = {n: (v.reshape(1, -1), np.asarray([ok])) for n, (v, ok) in feats.items()}
            with torch.no_grad():
                return self.model.place_items(batch)[0].cpu().numpy().astype(np.float32)
        acc, n = np.zeros(self.item_emb.shape[1], np.float32), 0
        for name, (vec, _) in feats.items():
            rows, sims = self._neighbours(name, vec, self.knn_k)
            w = np.clip(sims, 0, None) + 1e-6
            acc += (w[:, None] * self.item_emb[rows]).sum(0) / w.sum()
            n += 1
        return acc / max(n, 1)
