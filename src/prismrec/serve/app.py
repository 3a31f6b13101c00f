"""The REST service (FastAPI) over a serving bundle; see docs/serving.md for the contract.

Endpoints (all under ``/v1`` need the API key in the ``X-API-Key`` header):

* ``GET /health``: liveness and catalogue facts (no key);
* ``POST /v1/recommend`` ``{"user": raw_id, "k": 10, "exclude_seen": true}``;
* ``POST /v1/recommend/session`` ``{"items": [raw ids, oldest first], "k": 10}``: a sequential model
  encodes the session; other models score the mean of the session items' vectors (``method``);
* ``GET /v1/items/{raw_id}/similar?k=10``: items by inner product with the item's vector;
* ``PUT /v1/items/{raw_id}`` ``{"title", "text", "image" (base64), "price"}``: add or update an item;
  answered 201/200 only once committed to the item store (:mod:`.store`: SQLite in ``STATE_DIR`` or a
  shared database), retrievable at once, by every service process over the same store;
* ``GET /v1/items/{raw_id}``, ``GET /v1/items?q=&limit=``, ``GET /v1/users?limit=``: lookups for clients
  and the web page; ``GET /`` the web page, ``/docs`` the OpenAPI UI, ``/openapi.json`` the schema.

Errors are JSON ``{"detail": ...}``: 400 bad Content-Length, 401 missing key, 403 wrong key (both checked
before the body is read), 404 unknown user or item, 409 the model cannot place new items, 413 body too
large (also for chunked bodies, read only up to the limit), 415 the upload is not an image we decode,
422 invalid request, 507 the store could not commit (nothing was stored).
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
from ..utils.io import clean_temp_files, write_bytes
from .coldstart import ItemPlacer, NotPlaceable, UnsupportedImage, decode_image, sanitize_image
from .index import ItemIndex
from .store import ItemStore, StoreError

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
    store_url: Optional[str] = None  # None: SQLite in the state folder; else a SQLAlchemy URL (PostgreSQL)


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
        # the model itself, when a request needs it: sequential sessions, content placement of new items
        self.model = None
        if "model_state" in a and (bundle.family == "sequential" or settings.cold_start == "model"):
            from .bundle import rebuild_model

            self.model = rebuild_model(bundle)
        self.seq_model = self.model if bundle.family == "sequential" else None
        self.placer = ItemPlacer(bundle, self.item_emb, knn_k=settings.knn_k, encoders=encoders,
                                 mode=settings.cold_start, model=self.model)
        self.placer.warm()
        self.state_dir = Path(settings.state_dir) if settings.state_dir else bundle.path / "state"
        self.added: dict[str, dict[str, Any]] = {}
        self.last_seq = 0
        self.store = (ItemStore(settings.store_url, bundle.identity) if settings.store_url
                      else ItemStore.for_state_dir(self.state_dir, bundle.identity))
        self.foreign = self.store.foreign()
        if self.foreign:
            log.warning("the item store holds %d item(s) placed by another model (identities %s); they are not "
                        "loaded: their vectors live in another model's space. Re-add them through this bundle.",
                        sum(self.foreign.values()), ", ".join(k[:12] for k in self.foreign))
        clean_temp_files(self.state_dir, older_than=600)  # other processes may be writing now
        n = self.sync()
        if n:
            log.info("loaded %d added item record(s) from the item store %s", n, self.store.safe_url)

    # ------------------------------------------------------------------------------------ state
    def sync(self) -> int:
        """Apply the store's records newer than the last applied one (other processes' writes too)."""
        n = 0
        with self.lock:
            for seq, rec in self.store.since(self.last_seq):
                self._apply(rec)
                self.last_seq = seq
                n += 1
        return n

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
        """Encode, place, **commit** to the item store, then apply: what is acknowledged is durable."""
        full_text = text if text else title
        if full_text and title and text and title not in text:
            full_text = f"{title}. {text}"
        image_type = None
        if image is not None:
            image, image_type = sanitize_image(image)
        feats = self.placer.encode(text=full_text, image=image, price=price)
        vec = self.placer.place(feats)
        if not np.all(np.isfinite(vec)):
            raise ValueError("the item's features gave a non-finite vector")
        rec: dict[str, Any] = {"item": raw, "title": title or (text or "")[:90], "price": price,
                               "modalities": sorted(feats), "method": self.placer.method,
                               "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "vector": [float(x) for x in vec]}
        if image is not None:
            name = hashlib.sha256(image).hexdigest()[:32] + (".jpg" if image_type == "image/jpeg" else ".png")
            try:
                write_bytes(self.state_dir / "images" / name, image)  # atomic; an orphan file is harmless
            except OSError as exc:
                raise StoreError(f"could not store the image ({exc.strerror or exc}); nothing was stored") from None
            rec["image_file"] = f"state:{name}"
        with self.lock:
            self.sync()  # others' writes first
            created = raw not in self.item_index
            self.store.append(rec)  # committed, or StoreError and nothing stored
            self.sync()  # applies it (and anything committed meanwhile) in store order
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
                query, method = self.seq_model.session_vectors([rows])[0].cpu().numpy(), "sequential"
        else:
            query, method = self.item_emb[rows].mean(0), "item_mean"
        got, scores = self.index.search(query, k, rows)
        return self.describe_items(got, scores), method

    def similar(self, raw: str, k: int) -> list[dict[str, Any]]:
        r = self.item_index[raw]
        rows, scores = self.index.search(self.item_emb[r], k, [r])
        return self.describe_items(rows, scores)


# ---------------------------------------------------------------------------------------------- app
def create_app(bundle: str | Path | Bundle, settings: ServeSettings, *, encoders: dict | None = None):
    """The FastAPI application for ``bundle`` (a path or a loaded :class:`Bundle`)."""
    try:
        from fastapi import Depends, FastAPI, HTTPException, Path as PathParam, Query, Request
        from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
        from pydantic import BaseModel, ConfigDict, Field, field_validator
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
        price: Optional[float] = Field(None, ge=0, le=1e9, allow_inf_nan=False)

        @field_validator("title", "text")
        @classmethod
        def _encodable(cls, v: Optional[str]) -> Optional[str]:
            if v is not None:
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError("text must be valid Unicode (it holds a lone surrogate)") from None
            return v

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

    app.add_middleware(RequestGuard, api_key=settings.api_key, max_body=settings.max_body_bytes)

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the errors echo the input: NaN, infinities and lone surrogates must not turn a 422 into a 500
        return JSONResponse({"detail": _json_safe(exc.errors())}, status_code=422)

    def require_key(request: Request) -> None:
        given = request.headers.get("x-api-key")
        if not given:
            raise HTTPException(401, "missing API key: send it in the X-API-Key header",
                                headers={"WWW-Authenticate": "X-API-Key"})
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise HTTPException(403, "wrong API key")

    def refresh() -> None:
        """Items added through other service processes (a shared store) become visible here first."""
        svc.sync()

    auth = [Depends(require_key), Depends(refresh)]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": b.meta["model"], "dataset": b.meta["dataset"], "items": len(svc.item_ids),
                "added_items": len(svc.added), "foreign_added_items": sum(svc.foreign.values()),
                "users": len(svc.user_ids), "index": svc.index.kind,
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
        except UnsupportedImage as exc:
            raise HTTPException(415, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        except StoreError as exc:
            raise HTTPException(507, str(exc)) from None
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
        svc.sync()
        r = svc.item_index.get(raw_id)
        ref = svc.images[r] if r is not None else ""
        if ref.startswith(("http://", "https://")):
            return JSONResponse({"detail": "image is remote", "url": ref}, status_code=404)
        if ref.startswith("state:"):
            p = confined(svc.state_dir / "images", ref[6:])
        else:
            p = confined(Path(b.meta.get("image_root") or b.path), ref) if ref else None
        kind = _sniff(p) if p is not None else None
        if kind is None:  # outside the image root, missing, or not an image: never served
            raise HTTPException(404, "no image for this item")
        return Response(p.read_bytes(), media_type=kind)

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


ENV_BUNDLE, ENV_SETTINGS = "PRISMREC_SERVE_BUNDLE", "PRISMREC_SERVE_SETTINGS"


def settings_to_env(bundle: str | Path, settings: ServeSettings) -> dict[str, str]:
    """What a worker process needs to build the same app (the key travels as ``PRISMREC_API_KEY``)."""
    from dataclasses import asdict

    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items() if k != "api_key"}
    return {ENV_BUNDLE: str(Path(bundle).resolve()), ENV_SETTINGS: json.dumps(values),
            "PRISMREC_API_KEY": settings.api_key}


def app_from_env():
    """The app of one service process started by ``prismrec serve --workers N`` (uvicorn factory)."""
    values = json.loads(os.environ[ENV_SETTINGS])
    if values.get("state_dir"):
        values["state_dir"] = Path(values["state_dir"])
    return create_app(os.environ[ENV_BUNDLE], ServeSettings(api_key=os.environ["PRISMREC_API_KEY"], **values))


class RequestGuard:
    """ASGI middleware: limits before work. For ``/v1`` requests the API key is checked first, then the
    body size, both before any of the body is read: a declared ``Content-Length`` over the limit is refused
    at once, and a chunked body is read only up to the limit (never buffered beyond it) and refused there.
    Answers 401 (no key), 403 (wrong key), 413 (too large), 400 (bad ``Content-Length``)."""

    def __init__(self, app: Any, *, api_key: str, max_body: int):
        self.app, self.key, self.max_body = app, api_key.encode(), max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if path.startswith("/v1/") and not (method == "GET" and path.endswith("/image")):
            given = headers.get("x-api-key")
            if not given:
                return await _answer(send, 401, "missing API key: send it in the X-API-Key header",
                                     {"www-authenticate": "X-API-Key"})
            if not hmac.compare_digest(given, self.key):
                return await _answer(send, 403, "wrong API key")
        too_big = f"request body larger than {self.max_body} bytes"
        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await _answer(send, 400, "invalid Content-Length header")
            if declared > self.max_body:
                return await _answer(send, 413, too_big)
            return await self.app(scope, receive, send)
        if method not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:  # a chunked body: read up to the limit, refuse beyond it
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await _answer(send, 413, too_big)
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _answer(send: Any, status: int, detail: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *((k.encode(), v.encode()) for k, v in (extra or {}).items())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats, bytes and unencodable strings replaced by printable strings."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else str(obj)
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
            return obj
        except UnicodeEncodeError:
            return obj.encode("utf-8", "backslashreplace").decode("ascii", "replace")
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (int, bool)) or obj is None:
        return obj
    return _json_safe(str(obj))


def confined(root: Path, ref: str) -> Path | None:
    """``root / ref`` if it is a file inside ``root`` once both are resolved (``..``, absolute paths and
    symbolic links that leave the root give None)."""
    try:
        base = root.resolve()
        p = (base / ref).resolve()
    except (OSError, ValueError):
        return None
    return p if p.is_relative_to(base) and p.is_file() else None


def _sniff(p: Path) -> str | None:
    """The image type from the file's first bytes; None when it is not an image we serve."""
    with open(p, "rb") as fh:
        head = fh.read(12)
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if head[:4] == b"GIF8":
        return "image/gif"
    if head[8:12] == b"WEBP":
        return "image/webp"
    return None
