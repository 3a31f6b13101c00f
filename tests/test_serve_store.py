"""The service's durability and safety: the transactional item store (SQLite, PostgreSQL), full disks,
model identity, the one-time migration of added.jsonl, confined image files, limits checked before any
work, invalid JSON values, and a soak test that kills the server with SIGKILL while 50 clients write."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
from fastapi.testclient import TestClient  # noqa: E402

from prismrec.features.encoders import PriceEncoder  # noqa: E402
from prismrec.runs import train_run  # noqa: E402
from prismrec.serve.app import RequestGuard, ServeSettings, create_app  # noqa: E402
from prismrec.serve.bundle import export_bundle  # noqa: E402

from conftest import write_mmrec  # noqa: E402

KEY = {"X-API-Key": "secret"}


@pytest.fixture(scope="module")
def price_folder(tmp_path_factory):
    """A toy dataset whose only modality is a price made by the price encoder: new items are placed from a
    price alone, with no model download."""
    folder, _ = write_mmrec(tmp_path_factory.mktemp("data"), n_users=50, n_items=40)
    for f in folder.glob("*_feat.npy"):
        f.unlink()
    prices = np.random.default_rng(0).uniform(1, 500, 40).round(2).tolist()
    enc = PriceEncoder().fit(prices)
    values, _ = enc.encode(prices)
    np.save(folder / "price_feat.npy", values)
    (folder / "features.json").write_text(json.dumps({"modalities": {
        "price": {"kind": "price", "encoder": "log-quantile", "settings": enc.settings}}}))
    return folder


@pytest.fixture(scope="module")
def bundles(price_folder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    out = {}
    for model in ("bpr", "lightgcn"):
        run = train_run(model, str(price_folder), tmp / model, overrides=["train.threads=1"], epochs=2)
        out[model] = export_bundle(run.run_dir, tmp / f"bundle-{model}")
    return out


def client_for(bundle, state, **kw):
    app = create_app(bundle, ServeSettings(api_key="secret", state_dir=state, **kw))
    return TestClient(app), app


# ------------------------------------------------------------------------------------------ the store
def test_acknowledged_items_survive_restart_and_are_shared_by_processes(bundles, tmp_path):
    state = tmp_path / "state"
    a, app_a = client_for(bundles["bpr"], state)
    b, _ = client_for(bundles["bpr"], state)  # a second service process over the same store
    r = a.put("/v1/items/new-1", json={"title": "lamp", "price": 42.0}, headers=KEY)
    assert r.status_code == 201, r.text
    assert (state / "items.sqlite").is_file()
    got = b.get("/v1/items/new-1", headers=KEY)  # written through a, read through b
    assert got.status_code == 200 and got.json()["added"] is True
    sim = b.get("/v1/items/new-1/similar?k=3", headers=KEY)
    assert sim.status_code == 200 and len(sim.json()["items"]) == 3
    c, app_c = client_for(bundles["bpr"], state)  # restart
    np.testing.assert_allclose(app_c.state.service.item_emb[-1], app_a.state.service.item_emb[-1])
    assert c.put("/v1/items/new-1", json={"price": 7.0}, headers=KEY).status_code == 200  # an update


def test_a_full_disk_loses_nothing_acknowledged_and_stores_nothing_half(bundles, tmp_path):
    """SQLite's page limit makes the database really full: the PUT that does not fit gets 507 and is not
    stored; after the limit is raised, new PUTs succeed; after a restart exactly the acknowledged items
    are there (the old log-file design lost the first item written after a full disk)."""
    from sqlalchemy import event

    state = tmp_path / "state"
    client, app = client_for(bundles["bpr"], state)
    engine = app.state.service.store.engine
    limit = {"pages": 0}

    @event.listens_for(engine, "connect")
    def _limit(dbapi_conn, _):  # noqa: ANN001
        if limit["pages"]:
            dbapi_conn.execute(f"PRAGMA max_page_count={limit['pages']}")

    with engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
    limit["pages"] = pages + 1
    engine.dispose()
    acked, refused = [], []
    for n in range(300):
        r = client.put(f"/v1/items/fill-{n}", json={"title": "x" * 400, "price": 10.0 + n}, headers=KEY)
        (acked if r.status_code in (200, 201) else refused).append((f"fill-{n}", r.status_code))
        if refused:
            break
    assert refused and refused[0][1] == 507, refused
    assert client.get(f"/v1/items/{refused[0][0]}", headers=KEY).status_code == 404
    limit["pages"] = 0
    engine.dispose()
    after = [client.put(f"/v1/items/after-{n}", json={"price": 3.0 + n}, headers=KEY).status_code for n in range(2)]
    assert after == [201, 201]
    c2, _ = client_for(bundles["bpr"], state)  # restart
    for item, _ in acked + [("after-0", 0), ("after-1", 0)]:
        assert c2.get(f"/v1/items/{item}", headers=KEY).status_code == 200, item
    assert c2.get(f"/v1/items/{refused[0][0]}", headers=KEY).status_code == 404


def test_records_of_another_model_are_refused(bundles, tmp_path):
    state = tmp_path / "state"
    a, _ = client_for(bundles["bpr"], state)
    assert a.put("/v1/items/bpr-item", json={"price": 5.0}, headers=KEY).status_code == 201
    b, app_b = client_for(bundles["lightgcn"], state)  # another model over the same state folder
    assert b.get("/v1/items/bpr-item", headers=KEY).status_code == 404
    assert sum(app_b.state.service.foreign.values()) == 1
    assert b.get("/health").json()["foreign_added_items"] == 1


def test_legacy_added_jsonl_is_migrated_once(bundles, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    from prismrec.serve.bundle import load_bundle

    d = load_bundle(bundles["bpr"]).arrays["item_emb"].shape[1]
    recs = [{"item": "old-1", "title": "old", "vector": [0.1] * d}, {"item": "old-2", "vector": [0.2] * d}]
    (state / "added.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"item": "torn", "vec')
    client, _ = client_for(bundles["bpr"], state)
    assert client.get("/v1/items/old-1", headers=KEY).status_code == 200
    assert client.get("/v1/items/old-2", headers=KEY).status_code == 200
    assert client.get("/v1/items/torn", headers=KEY).status_code == 404
    assert not (state / "added.jsonl").exists() and (state / "added.jsonl.migrated").is_file()
    client2, app2 = client_for(bundles["bpr"], state)  # not migrated twice
    assert list(app2.state.service.added) == ["old-1", "old-2"]


def test_leftover_temp_files_are_cleaned_at_start(bundles, tmp_path):
    state = tmp_path / "state"
    (state / "images").mkdir(parents=True)
    leftover = state / "images" / ".abc.png.x1y2.tmp"
    leftover.write_bytes(b"half")
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))  # stale: left by a writer killed an hour ago
    fresh = state / "images" / ".def.png.x1y2.tmp"
    fresh.write_bytes(b"being written by another process")
    client_for(bundles["bpr"], state)
    assert not leftover.exists() and fresh.exists()


# ------------------------------------------------------------------------------------------ files
def _png(size=(8, 6)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_images_are_served_only_from_inside_the_image_root(bundles, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(bundles["bpr"], bundle)
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.png").write_bytes(_png())
    (root / "not-an-image.png").write_text("plain text")
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png())
    os.symlink(secret, root / "link.png")
    meta = json.loads((bundle / "bundle.json").read_text())
    refs = ["sub/ok.png", "/etc/passwd", "../secret.png", "sub/../../secret.png", str(secret), "link.png",
            "not-an-image.png"]
    meta["images"] = refs + [""] * (len(meta["item_ids"]) - len(refs))
    meta["image_root"] = str(root)
    (bundle / "bundle.json").write_text(json.dumps(meta))
    client, _ = client_for(bundle, tmp_path / "state")
    ids = meta["item_ids"]
    ok = client.get(f"/v1/items/{ids[0]}/image")
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"
    for i in range(1, len(refs)):
        r = client.get(f"/v1/items/{ids[i]}/image")
        assert r.status_code == 404, (refs[i], r.status_code)


def test_uploads_are_decoded_and_re_encoded_or_refused(bundles, tmp_path):
    client, app = client_for(bundles["bpr"], tmp_path / "state")
    photo = base64.b64encode(_png()).decode()
    r = client.put("/v1/items/pic", json={"price": 3.0, "image": photo}, headers=KEY)
    assert r.status_code == 201, r.text
    img = client.get("/v1/items/pic/image")
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert img.content != base64.b64decode(photo) or img.content.startswith(b"\x89PNG")
    script = base64.b64encode(b"<script>alert(1)</script>").decode()
    r = client.put("/v1/items/js", json={"price": 3.0, "image": script}, headers=KEY)
    assert r.status_code == 415
    # a PNG header announcing 100,000 x 100,000 pixels is refused before its pixels are decoded
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))
    t0 = time.perf_counter()
    r = client.put("/v1/items/bomb", json={"price": 3.0, "image": base64.b64encode(bomb).decode()}, headers=KEY)
    assert r.status_code == 415 and time.perf_counter() - t0 < 10
    assert client.get("/v1/items/js", headers=KEY).status_code == 404


# ------------------------------------------------------------------------------------------ limits
def _guard_call(headers: dict[str, str], chunks: int, chunk_size: int, max_body: int):
    """Run the guard over a streamed body of ``chunks`` chunks; returns (status, chunks read, app reached)."""
    read = {"n": 0}
    reached = {"app": False}

    async def app(scope, receive, send):
        reached["app"] = True
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive():
        read["n"] += 1
        return {"type": "http.request", "body": b"x" * chunk_size, "more_body": read["n"] < chunks}

    sent = []

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "path": "/v1/items/x", "method": "PUT",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(RequestGuard(app, api_key="secret", max_body=1 << 20)(scope, receive, send))
    return sent[0]["status"], read["n"], reached["app"]


def test_the_key_and_the_size_are_checked_before_the_body_is_read():
    # 300 MB announced, no key: 401 and not one byte read
    assert _guard_call({"content-length": str(300 << 20)}, 4800, 1 << 16, 1 << 20) == (401, 0, False)
    assert _guard_call({"x-api-key": "wrong"}, 4800, 1 << 16, 1 << 20) == (403, 0, False)
    assert _guard_call({"x-api-key": "secret", "content-length": str(300 << 20)}, 4800, 1 << 16, 1 << 20) \
        == (413, 0, False)
    # chunked (no Content-Length), 300 MB: read only up to the 1 MiB limit, then refused
    status, read, reached = _guard_call({"x-api-key": "secret"}, 4800, 1 << 16, 1 << 20)
    assert status == 413 and read <= (1 << 20) // (1 << 16) + 1 and not reached
    # a small chunked body passes, whole
    assert _guard_call({"x-api-key": "secret"}, 3, 100, 1 << 20) == (200, 3, True)


def test_invalid_json_values_are_422_not_500(bundles, tmp_path):
    client, _ = client_for(bundles["bpr"], tmp_path / "state")
    h = {**KEY, "content-type": "application/json"}
    for body in ('{"price": NaN}', '{"price": Infinity}', '{"title": "\\ud800 lamp", "price": 3}',
                 '{"text": "\\udfff", "price": 3}', '{"price": 1e999}', '{"price": "abc"}', '{"price": 3',
                 '[1, 2]'):
        r = client.put("/v1/items/bad", content=body.encode(), headers=h)
        assert r.status_code == 422, (body, r.status_code, r.text)
    assert client.get("/v1/items/bad", headers=KEY).status_code == 404


# ------------------------------------------------------------------------------------------ postgres
def test_postgres_store_shared_by_two_services(bundles, tmp_path, postgres_url):
    a, _ = client_for(bundles["bpr"], tmp_path / "a", store_url=postgres_url)
    b, _ = client_for(bundles["bpr"], tmp_path / "b", store_url=postgres_url)
    r = a.put("/v1/items/pg-1", json={"price": 9.5}, headers=KEY)
    assert r.status_code == 201, r.text
    assert b.get("/v1/items/pg-1", headers=KEY).status_code == 200
    assert not (tmp_path / "a" / "items.sqlite").exists()
    c, _ = client_for(bundles["bpr"], tmp_path / "c", store_url=postgres_url)  # a restart elsewhere
    assert c.get("/v1/items/pg-1", headers=KEY).json()["added"] is True


# ------------------------------------------------------------------------------------------ soak
@pytest.mark.slow
def test_soak_sigkill_loses_no_acknowledged_write(bundles, tmp_path):
    """50 clients mix recommendations and PUTs for a bounded time; the server (2 processes) is killed
    with SIGKILL three times and restarted; every acknowledged PUT is found afterwards, and no request
    fails while the server is up."""
    from prismrec.serve.bundle import load_bundle
    from prismrec.serve.soak import ServerProcess, free_port, run_soak

    bundle = tmp_path / "bundle"
    shutil.copytree(bundles["bpr"], bundle)
    users = load_bundle(bundle).user_ids
    server = ServerProcess(bundle, port=free_port(), key="secret", workers=2, log=tmp_path / "server.log")
    server.start()
    try:
        res = run_soak(server, users=users, seconds=12, clients=50, kills=3, max_requests=20_000)
    finally:
        server.stop()
    assert res.kills == 3 and res.puts_acknowledged > 20, res.summary()
    assert res.acknowledged_found == res.puts_acknowledged, res.summary()
    assert not res.errors_while_up, (res.summary(), res.errors_while_up[:5])
