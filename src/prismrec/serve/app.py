"""The REST service (FastAPI) over a serving bundle; see docs/serving.md for the contract.

Endpoints (all under ``/v1`` need the API key in the ``X-API-Key`` header):

* ``GET /health``: liveness and catalogue facts (no key);
* ``POST /v1/recommend`` ``{"user": raw_id, "k": 10, "exclude_seen": true}``;
* ``POST /v1/recommend/session`` ``{"items": [raw ids, oldest first], "k": 10}``: a sequential model
  encodes the session; other models score the mean of the session items' vectors (``method``);
* ``GET /v1/items/{raw_id}/similar?k=10``: items by inner product with the item's vector;
* ``PUT /v1/items/{raw_id}`` ``{"title", "text", "image" (base64), "price"}``: add or update an item;
  it is retrievable at once and kept in ``STATE_DIR/added.jsonl`` (replayed at start);
* ``GET /v1/items/{raw_id}``, ``GET /v1/items?q=&limit=``, ``GET /v1/users?limit=``: lookups for clients
  and the web page; ``GET /`` the web page, ``/docs`` the OpenAPI UI, ``/openapi.json`` the schema.

Errors are JSON ``{"detail": ...}``: 401 missing key, 403 wrong key, 404 unknown user or item, 409 the
model cannot place new items, 413 body too large, 422 invalid request.
"""

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import PrismrecError
from .bundle import Bundle, load_bundle
from .coldstart import ItemPlacer, NotPlaceable, decode_image
from .index import ItemIndex

log = logging.getLogger("prismrec")

RAW_ID_PATTERN = r"^[A-Za-z0-9_.:@+-]{1,128}$"
MAX_SESSION = 200
MAX_TEXT = 20_000


@dataclass
class ServeSettings:
    api_key: str
    state_dir: Optional[Path] = None
    ann_threshold: int = 50_000
    nprobe: int = 64
    max_k: int = 100
    max_body_bytes: int = 8 * 2 ** 20
    threads: int = 1
    knn_k: int = 10
    cold_start: str = "knn"


class Service:
    """State behind the endpoints: vectors, id maps, seen items, the FAISS index, added items."""

    def __init__(self, bundle: Bundle, settings: ServeSettings, encoders: dict | None = None):
        import torch

        torch.set_num_threads(settings.threads)
        self.bundle, self.settings = bundle, settings
        a, meta = bundle.arrays, bundle.meta
        self.item_ids: list[str] = list(meta["item_ids"])
        self.item_index = {r: i for i, r in enumerate(self.item_ids)}
        self.titles: list[str] = list(meta.get("titles") or [""] * len(self.item_ids))
        self.images: list[str] = list(meta.get("images") or [""] * len(self.item_ids))
        self.user_ids: list[str] = list(meta["user_ids"])
        self.user_index = {r: i for i, r in enumerate(self.user_ids)}
        self.n_catalogue = len(self.item_ids)
        self.item_emb = np.ascontiguousarray(a["item_emb"], dtype=np.float32)
        self.user_emb = np.ascontiguousarray(a["user_emb"], dtype=np.float32)
        self.seen_indptr, self.seen_indices = a["seen_indptr"], a["seen_indices"]
        self.lock = threading.RLock()
        t0 = time.perf_counter()
        self.index = ItemIndex(self.item_emb, ann_threshold=settings.ann_threshold, nprobe=settings.nprobe,
                               threads=settings.threads)
        log.info("index %s over %d items built in %.1fs", self.index.kind, self.n_catalogue, time.perf_counter() - t0)
        self.placer = ItemPlacer(bundle, self.item_emb, knn_k=settings.knn_k, encoders=encoders,
                                 mode=settings.cold_start)
        self.seq_model = None
        if bundle.family == "sequential" and "model_state" in a:
            from .bundle import rebuild_model

            self.seq_model = rebuild_model(bundle)
            self.seq_model.prepare_scoring()
        self.state_dir = Path(settings.state_dir) if settings.state_dir else bundle.path / "state"
        self.added: dict[str, dict[str, Any]] = {}
        self._replay()

    # ------------------------------------------------------------------------------------ state
    @property
    def log_file(self) -> Path:
        return self.state_dir / "added.jsonl"

    def _replay(self) -> None:
        if not self.log_file.is_file():
            return
        n = 0
        for line in self.log_file.read_text().splitlines():
            try:
                rec = json.loads(line)
                self._apply(rec)
                n += 1
            except (ValueError, KeyError) as exc:  # a torn last line after a crash
                log.warning("skipping unreadable line of %s: %s", self.log_file, exc)
        log.info("replayed %d added item(s) from %s", n, self.log_file)

    def _apply(self, rec: dict[str, Any]) -> tuple[int, bool]:
        raw = rec["item"]
        vec = np.asarray(rec["vector"], dtype=np.float32)
        with self.lock:
            created = raw not in self.item_index
            if created:
                row = len(self.item_ids)
                self.item_ids.append(raw)
                self.titles.append(rec.get("title") or "")
                self.images.append(rec.get("image_file") or "")
                self.item_index[raw] = row
                self.item_emb = np.vstack([self.item_emb, vec[None]])
            else:
                row = self.item_index[raw]
                self.titles[row] = rec.get("title") or self.titles[row]
                if rec.get("image_file"):
                    self.images[row] = rec["image_file"]
                self.item_emb[row] = vec
            self.index.upsert(row, vec)
            self.added[raw] = {k: v for k, v in rec.items() if k != "vector"}
        return row, created

    def put_item(self, raw: str, title: str | None, text: str | None, image: bytes | None,
                 price: float | None) -> dict[str, Any]:
        full_text = text if text else title
        if full_text and title and text and title not in text:
            full_text = f"{title}. {text}"
        feats = self.placer.encode(text=full_text, image=image, price=price)
        vec = self.placer.place(feats)
        rec: dict[str, Any] = {"item": raw, "title": title or (text or "")[:90], "price": price,
                               "modalities": sorted(feats), "method": self.placer.method,
                               "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "vector": [float(x) for x in vec]}
        if image is not None:
            name = hashlib.sha1(image).hexdigest()[:20] + ".img"
            (self.state_dir / "images").mkdir(parents=True, exist_ok=True)
            (self.state_dir / "images" / name).write_bytes(image)
            rec["image_file"] = f"state:{name}"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.lock:
            with open(self.log_file, "a") as fh:  # append + fsync: an acknowledged item survives a crash
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            row, created = self._apply(rec)
        return {"item": raw, "created": created, "modalities": rec["modalities"], "method": rec["method"],
                "catalogue_size": len(self.item_ids)}

    # ---------------------------------------------------------------------------------- queries
    def seen(self, user: int) -> np.ndarray:
        return self.seen_indices[self.seen_indptr[user]:self.seen_indptr[user + 1]]

    def describe_items(self, rows: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
        out = []
        for r, s in zip(rows, scores):
            img = self.images[r] if r < len(self.images) else ""
            out.append({"item": self.item_ids[r], "score": float(s), "title": self.titles[r],
                        "image": f"/v1/items/{self.item_ids[r]}/image" if img else None})
        return out

    def recommend_user(self, user: str, k: int, exclude_seen: bool) -> list[dict[str, Any]]:
        u = self.user_index[user]
        rows, scores = self.index.search(self.user_emb[u], k, self.seen(u) if exclude_seen else ())
        return self.describe_items(rows, scores)

    def recommend_session(self, items: list[str], k: int) -> tuple[list[dict[str, Any]], str]:
        rows = [self.item_index[i] for i in items]
        if self.seq_model is not None and all(r < self.n_catalogue for r in rows):
            import torch

            with torch.no_grad():
                h = self.seq_model.encode(torch.as_tensor(_pad(rows, self.seq_model.max_len)))
            query, method = h[0].numpy(), "sequential"
        else:
            query, method = self.item_emb[rows].mean(0), "item_mean"
        got, scores = self.index.search(query, k, rows)
        return self.describe_items(got, scores), method

    def similar(self, raw: str, k: int) -> list[dict[str, Any]]:
        r = self.item_index[raw]
        rows, scores = self.index.search(self.item_emb[r], k, [r])
        return self.describe_items(rows, scores)


def _pad(rows: list[int], max_len: int) -> np.ndarray:
    from ..models.sequential.base import pad_windows

    arr = np.asarray(rows, dtype=np.int64)
    return pad_windows(arr, np.asarray([0]), np.asarray([len(arr)]), max_len)


# ---------------------------------------------------------------------------------------------- app
def create_app(bundle: str | Path | Bundle, settings: ServeSettings, *, encoders: dict | None = None):
    """The FastAPI application for ``bundle`` (a path or a loaded :class:`Bundle`)."""
    try:
        from fastapi import Depends, FastAPI, HTTPException, Path as PathParam, Query, Request
        from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
        from pydantic import BaseModel, ConfigDict, Field
    except ImportError:
        raise PrismrecError("prismrec serve needs fastapi. Fix: pip install 'prismrec[serve]'.") from None
    if not settings.api_key:
        raise PrismrecError("an API key is required (PRISMREC_API_KEY).")

    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    svc = Service(b, settings, encoders=encoders)
    max_k = settings.max_k

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class RecommendRequest(Strict):
        user: str = Field(..., min_length=1, max_length=128, description="raw user id")
        k: int = Field(10, ge=1, le=max_k)
        exclude_seen: bool = True

    class SessionRequest(Strict):
        items: list[str] = Field(..., min_length=1, max_length=MAX_SESSION, description="raw item ids, oldest first")
        k: int = Field(10, ge=1, le=max_k)

    class ItemIn(Strict):
        title: Optional[str] = Field(None, max_length=1000)
        text: Optional[str] = Field(None, max_length=MAX_TEXT, description="description; title + text are encoded")
        image: Optional[str] = Field(None, description="base64 image (JPEG/PNG/...), optionally a data: URL")
        price: Optional[float] = Field(None, ge=0, le=1e9)

    class Scored(BaseModel):
        item: str
        score: float
        title: str
        image: Optional[str] = None

    class Recommendations(BaseModel):
        items: list[Scored]
        method: str = "model"

    app = FastAPI(title="prismrec", version=str(b.meta.get("versions", {}).get("prismrec", "0")),
                  description=f"Recommendations from a {b.meta['model']} model trained on {b.meta['dataset']}. "
                              "Send the API key in the X-API-Key header.")
    app.state.service = svc

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None:
            try:
                too_big = int(length) > settings.max_body_bytes
            except ValueError:
                return JSONResponse({"detail": "invalid Content-Length header"}, status_code=400)
            if too_big:
                return JSONResponse({"detail": f"request body larger than {settings.max_body_bytes} bytes"},
                                    status_code=413)
        elif request.method in ("POST", "PUT", "PATCH"):
            body = await request.body()  # chunked upload: measure what arrived
            if len(body) > settings.max_body_bytes:
                return JSONResponse({"detail": f"request body larger than {settings.max_body_bytes} bytes"},
                                    status_code=413)
        return await call_next(request)

    def require_key(request: Request) -> None:
        given = request.headers.get("x-api-key")
        if not given:
            raise HTTPException(401, "missing API key: send it in the X-API-Key header",
                                headers={"WWW-Authenticate": "X-API-Key"})
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise HTTPException(403, "wrong API key")

    auth = [Depends(require_key)]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": b.meta["model"], "dataset": b.meta["dataset"], "items": len(svc.item_ids),
                "added_items": len(svc.added), "users": len(svc.user_ids), "index": svc.index.kind,
                "cold_start": svc.placer.describe(), "session": "sequential" if svc.seq_model else "item_mean"}

    @app.post("/v1/recommend", response_model=Recommendations, dependencies=auth,
              responses={404: {"description": "unknown user"}})
    def recommend(req: RecommendRequest) -> dict[str, Any]:
        if req.user not in svc.user_index:
            raise HTTPException(404, f"unknown user {req.user!r}")
        return {"items": svc.recommend_user(req.user, req.k, req.exclude_seen), "method": "model"}

    @app.post("/v1/recommend/session", response_model=Recommendations, dependencies=auth,
              responses={404: {"description": "unknown item"}})
    def recommend_session(req: SessionRequest) -> dict[str, Any]:
        unknown = [i for i in req.items if i not in svc.item_index]
        if unknown:
            raise HTTPException(404, f"unknown item(s): {', '.join(map(repr, unknown[:5]))}")
        items, method = svc.recommend_session(req.items, req.k)
        return {"items": items, "method": method}

    item_id = PathParam(..., pattern=RAW_ID_PATTERN, description="raw item id")

    @app.get("/v1/items/{raw_id}/similar", response_model=Recommendations, dependencies=auth,
             responses={404: {"description": "unknown item"}})
    def similar(raw_id: str = item_id, k: int = Query(10, ge=1, le=max_k)) -> dict[str, Any]:
        if raw_id not in svc.item_index:
            raise HTTPException(404, f"unknown item {raw_id!r}")
        return {"items": svc.similar(raw_id, k), "method": "model"}

    @app.put("/v1/items/{raw_id}", dependencies=auth,
             responses={409: {"description": "the model cannot place new items"},
                        413: {"description": "body too large"}})
    def put_item(item: ItemIn, raw_id: str = item_id) -> JSONResponse:
        if not (item.title or item.text or item.image or item.price is not None):
            raise HTTPException(422, "give at least one of title, text, image or price")
        try:
            image = decode_image(item.image)
            res = svc.put_item(raw_id, item.title, item.text, image, item.price)
        except NotPlaceable as exc:
            raise HTTPException(409 if svc.placer.method == "none" else 422, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return JSONResponse(res, status_code=201 if res["created"] else 200)

    @app.get("/v1/items/{raw_id}", dependencies=auth, responses={404: {"description": "unknown item"}})
    async def get_item(raw_id: str = item_id) -> dict[str, Any]:
        if raw_id not in svc.item_index:
            raise HTTPException(404, f"unknown item {raw_id!r}")
        r = svc.item_index[raw_id]
        return {"item": raw_id, "title": svc.titles[r], "added": raw_id in svc.added,
                "image": f"/v1/items/{raw_id}/image" if svc.images[r] else None}

    @app.get("/v1/items/{raw_id}/image", responses={404: {"description": "no image"}})
    def get_image(raw_id: str = item_id):
        # images are served without the key so that <img> tags work; ids are not secret
        r = svc.item_index.get(raw_id)
        ref = svc.images[r] if r is not None else ""
        if ref.startswith("state:"):
            p = svc.state_dir / "images" / ref[6:]
            if p.is_file():
                return Response(p.read_bytes(), media_type=_sniff(p))
        elif ref.startswith(("http://", "https://")):
            return JSONResponse({"detail": "image is remote", "url": ref}, status_code=404)
        elif ref:
            root = Path(b.meta.get("image_root") or b.path)
            p = (root / ref) if not Path(ref).is_absolute() else Path(ref)
            if p.is_file():
                return FileResponse(p)
        raise HTTPException(404, "no image for this item")

    @app.get("/v1/items", dependencies=auth)
    async def search_items(q: str = Query("", max_length=200), limit: int = Query(20, ge=1, le=100)) -> dict[str, Any]:
        ql = q.lower()
        hits = []
        for r, (raw, title) in enumerate(zip(svc.item_ids, svc.titles)):
            if not ql or ql in title.lower() or ql == raw.lower():
                hits.append({"item": raw, "title": title, "image": f"/v1/items/{raw}/image" if svc.images[r] else None})
                if len(hits) >= limit:
                    break
        return {"items": hits}

    @app.get("/v1/users", dependencies=auth)
    async def list_users(limit: int = Query(20, ge=1, le=100), offset: int = Query(0, ge=0)) -> dict[str, Any]:
        return {"users": svc.user_ids[offset:offset + limit], "total": len(svc.user_ids)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        from .page import PAGE

        return PAGE

    return app


def _sniff(p: Path) -> str:
    head = p.read_bytes()[:12]
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if head[:4] == b"GIF8":
        return "image/gif"
    if head[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"
