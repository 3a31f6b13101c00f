"""Export bundles and the REST service: exact scores, weights_only loading, auth, validation, limits, seen
filtering, sessions (sequential and fallback), similar items, cold-start items through PUT and their
persistence across a restart, the ANN index, and the web page."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from prismrec.features.encoders import Encoder  # noqa: E402
from prismrec.runs import load_run, train_run  # noqa: E402
from prismrec.serve.app import ServeSettings, create_app  # noqa: E402
from prismrec.serve.bundle import export_bundle, load_bundle, synthetic_bundle  # noqa: E402
from prismrec.serve.index import ItemIndex  # noqa: E402

from conftest import run_cli, write_mmrec  # noqa: E402
from browser import NO_CHROMIUM, chromium, load_page  # noqa: E402

GROUPS, DIM = 4, 16
KEY = {"X-API-Key": "secret"}


class GroupText(Encoder):
    """Stand-in text encoder: 'group G ...' -> the group's direction (what the toy text features hold)."""

    def __init__(self):
        super().__init__("text", "group-words", "1", DIM, {})

    def encode(self, inputs):
        out = np.zeros((len(inputs), DIM), np.float32)
        ok = np.zeros(len(inputs), bool)
        for r, t in enumerate(inputs):
            words = str(t or "").split()
            if "group" in words:
                out[r, int(words[words.index("group") + 1]) % GROUPS] = 1.0
                ok[r] = True
        return out, ok


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    folder, _ = write_mmrec(tmp_path_factory.mktemp("data"), n_users=60, n_items=60, features=DIM)
    rng = np.random.default_rng(3)
    text = np.eye(GROUPS, DIM)[np.arange(60) % GROUPS] + 0.1 * rng.standard_normal((60, DIM))
    np.save(folder / "text_feat.npy", text.astype(np.float32))
    (folder / "features.json").write_text(json.dumps({"modalities": {
        "text": {"kind": "text", "encoder": "group-words"},
        "image": {"encoder": "an unnamed image model"}}}))
    return folder


def _train(folder, tmp, model, *extra):
    return train_run(model, str(folder), tmp / model, overrides=["train.threads=1", *extra], epochs=4)


@pytest.fixture(scope="module")
def lird(data_folder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    run = _train(data_folder, tmp, "lirdrec", "embedding_size=16")
    bundle = export_bundle(run.run_dir, tmp / "bundle")
    return run, bundle


def make_client(bundle, tmp_path=None, **kw):
    settings = ServeSettings(api_key="secret", state_dir=(tmp_path / "state") if tmp_path else None, **kw)
    app = create_app(bundle, settings, encoders={"text": GroupText()})
    return TestClient(app), app


# ------------------------------------------------------------------------------------------------ export
def test_bundle_loads_weights_only_and_reproduces_the_run(lird):
    run, bundle = lird
    raw = torch.load(bundle / "bundle.pt", weights_only=True)
    assert raw["item_emb"].shape[0] == 60 and raw["user_emb"].shape[0] == run.dataset.n_users
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["model"] == "lirdrec" and len(meta["item_ids"]) == 60 and meta["modalities"]["text"]["kind"] == "text"
    b = load_bundle(bundle)
    users = run.dataset.user_ids[:5]
    want = load_run(run.run_dir).recommend(list(users), k=10)
    uidx = [b.user_ids.index(u) for u in users]
    scores = b.arrays["user_emb"][uidx] @ b.arrays["item_emb"].T
    seen = b.seen()
    for j, u in enumerate(uidx):
        s = scores[j].copy()
        s[seen[u].indices] = -np.inf
        top = [b.item_ids[i] for i in np.argsort(-s, kind="stable")[:10]]
        assert top == list(want[want["user"] == users[j]]["item"])


def test_export_refuses_to_overwrite_and_needs_a_run(lird, tmp_path):
    run, bundle = lird
    r = run_cli("export", str(run.run_dir), "--out", str(bundle))
    assert r.returncode == 2 and "already holds files" in r.stderr
    r = run_cli("export", str(tmp_path), "--out", str(tmp_path / "b"))
    assert r.returncode == 2 and "not a prismrec run directory" in r.stderr
    r = run_cli("export", str(run.run_dir), "--out", str(tmp_path / "b2"))
    assert r.returncode == 0 and "60 items x" in r.stdout, r
    r = run_cli("serve", str(tmp_path / "b2"))  # cli_env() carries no PRISMREC_API_KEY unless the caller has one
    if "PRISMREC_API_KEY" not in __import__("os").environ:
        assert r.returncode == 2 and "PRISMREC_API_KEY is not set" in r.stderr


def test_bpr_with_item_bias_exports_exact_scores(data_folder, tmp_path):
    run = _train(data_folder, tmp_path, "bpr", "item_bias=true")
    b = load_bundle(export_bundle(run.run_dir, tmp_path / "b"))
    model = load_run(run.run_dir).model
    with torch.no_grad():
        want = model.score(torch.arange(5)).numpy()
    np.testing.assert_allclose(b.arrays["user_emb"][:5] @ b.arrays["item_emb"].T, want, rtol=1e-4, atol=1e-5)


def test_sequential_bundle_scores_sessions_with_the_model(data_folder, tmp_path):
    run = _train(data_folder, tmp_path, "sasrec", "embedding_size=16")
    bundle = export_bundle(run.run_dir, tmp_path / "b")
    client, app = make_client(bundle, tmp_path)
    ids = app.state.service.item_ids
    r = client.post("/v1/recommend/session", json={"items": ids[:3], "k": 5}, headers=KEY)
    assert r.status_code == 200 and r.json()["method"] == "sequential"
    got = [x["item"] for x in r.json()["items"]]
    model = load_run(run.run_dir).model
    with torch.no_grad():
        model.prepare_scoring()
        s = model.score_sequences([[0, 1, 2]])[0].numpy()
    s[[0, 1, 2]] = -np.inf
    assert got == [ids[i] for i in np.argsort(-s)[:5]]


# ------------------------------------------------------------------------------------------------- serve
def test_auth_health_and_validation(lird, tmp_path):
    client, _ = make_client(lird[1], tmp_path, max_k=50)
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["items"] == 60 and h["cold_start"]["method"] == "knn"
    assert h["cold_start"]["unusable_modalities"] == ["image"]
    body = {"user": "0", "k": 5}
    assert client.post("/v1/recommend", json=body).status_code == 401
    assert client.post("/v1/recommend", json=body, headers={"X-API-Key": "nope"}).status_code == 403
    assert client.post("/v1/recommend", json=body, headers=KEY).status_code == 200
    for bad in ({"user": "0", "k": 51}, {"user": "0", "k": 0}, {"user": "0", "k": "many"}, {"k": 3},
                {"user": "0", "k": 3, "extra": 1}):
        r = client.post("/v1/recommend", json=bad, headers=KEY)
        assert r.status_code == 422, bad
        assert r.json()["detail"][0]["loc"]
    assert client.post("/v1/recommend", content=b"{not json", headers={**KEY, "Content-Type": "application/json"}
                       ).status_code == 422
    r = client.post("/v1/recommend", json={"user": "nobody", "k": 3}, headers=KEY)
    assert r.status_code == 404 and "unknown user" in r.json()["detail"]
    assert client.post("/v1/recommend/session", json={"items": [], "k": 3}, headers=KEY).status_code == 422
    assert client.post("/v1/recommend/session", json={"items": ["zzz"], "k": 3}, headers=KEY).status_code == 404
    assert client.get("/v1/items/bad id!/similar", headers=KEY).status_code in (404, 422)
    assert client.get("/v1/items/999/similar", headers=KEY).status_code == 404
    assert "/v1/recommend" in client.get("/openapi.json").json()["paths"]


def test_payload_limit(lird, tmp_path):
    client, _ = make_client(lird[1], tmp_path, max_body_bytes=2000)
    r = client.put("/v1/items/new", json={"text": "group 1 " + "x" * 5000}, headers=KEY)
    assert r.status_code == 413


def test_recommendations_skip_seen_items_and_match_the_bundle(lird, tmp_path):
    client, app = make_client(lird[1], tmp_path)
    svc = app.state.service
    for user in svc.user_ids[:5]:
        items = [x["item"] for x in client.post("/v1/recommend", json={"user": user, "k": 10}, headers=KEY).json()["items"]]
        u = svc.user_index[user]
        seen = {svc.item_ids[i] for i in svc.seen(u)}
        assert len(items) == 10 and not seen & set(items)
        s = svc.user_emb[u] @ svc.item_emb.T
        s[svc.seen(u)] = -np.inf
        assert items == [svc.item_ids[i] for i in np.argsort(-s)[:10]]
        all_items = client.post("/v1/recommend", json={"user": user, "k": 10, "exclude_seen": False},
                                headers=KEY).json()["items"]
        assert [x["item"] for x in all_items] == [svc.item_ids[i] for i in np.argsort(-(svc.user_emb[u] @ svc.item_emb.T))[:10]]


def test_similar_items_and_session_fallback(lird, tmp_path):
    client, app = make_client(lird[1], tmp_path)
    ids = app.state.service.item_ids
    r = client.get(f"/v1/items/{ids[0]}/similar?k=5", headers=KEY).json()
    assert len(r["items"]) == 5 and ids[0] not in [x["item"] for x in r["items"]]
    r = client.post("/v1/recommend/session", json={"items": ids[:2], "k": 4}, headers=KEY).json()
    assert r["method"] == "item_mean" and not {ids[0], ids[1]} & {x["item"] for x in r["items"]}


@pytest.mark.parametrize("placement", ["model", "knn"])
def test_put_adds_a_cold_item_that_is_recommended_at_once_and_survives_restart(lird, tmp_path, placement):
    client, app = make_client(lird[1], tmp_path, cold_start=placement)
    svc = app.state.service
    r = client.put("/v1/items/new-2", json={"title": "thing", "text": "a group 2 gadget"}, headers=KEY)
    assert r.status_code == 201, r.text
    assert r.json()["method"] == {"model": "lirdrec", "knn": "knn"}[placement] and r.json()["modalities"] == ["text"]
    sim = client.get("/v1/items/new-2/similar?k=8", headers=KEY).json()["items"]
    assert sum(int(x["item"]) % GROUPS == 2 for x in sim) >= 6  # its neighbours are its group
    recs = client.post("/v1/recommend", json={"user": "2", "k": 60}, headers=KEY).json()["items"]
    assert "new-2" in [x["item"] for x in recs]
    # group-2 users score it above the same item described as another group's (content drives the vector)
    other = svc.placer.place(svc.placer.encode(text="group 0", image=None, price=None))
    row = svc.item_index["new-2"]
    wins = [svc.user_emb[svc.user_index[str(u)]] @ (svc.item_emb[row] - other) > 0 for u in range(2, 60, GROUPS)]
    assert np.mean(wins) >= 0.8
    vec = svc.item_emb[svc.item_index["new-2"]].copy()
    assert client.put("/v1/items/new-2", json={"text": "group 2 again"}, headers=KEY).status_code == 200
    assert client.put("/v1/items/x", json={"text": "no usable words"}, headers=KEY).status_code == 422
    assert client.put("/v1/items/x", json={}, headers=KEY).status_code == 422
    assert client.put("/v1/items/x", json={"text": "group 1", "image": "%%%"}, headers=KEY).status_code == 422
    # restart on the same state folder: the item is back, without encoding again
    client2, app2 = make_client(lird[1], tmp_path, cold_start=placement)
    assert app2.state.service.item_index["new-2"] == 60 and len(app2.state.service.item_ids) == 61
    np.testing.assert_allclose(app2.state.service.item_emb[60], svc.item_emb[60])
    assert not np.allclose(vec, 0)
    assert client2.get("/v1/items/new-2", headers=KEY).json()["added"] is True


def test_lirdrec_placement_reproduces_cold_catalogue_items(data_folder, tmp_path):
    """An item with no training interactions is placed by the same equations the model used for it."""
    from prismrec.serve.bundle import load_bundle as lb
    from prismrec.serve.coldstart import ItemPlacer

    run = _train(data_folder, tmp_path, "lirdrec", "embedding_size=16", "data.split=cold_items")
    b = lb(export_bundle(run.run_dir, tmp_path / "b"))
    placer = ItemPlacer(b, b.arrays["item_emb"], encoders={"text": GroupText()}, mode="model")
    assert placer.method == "lirdrec"
    cold = np.flatnonzero(np.diff(b.seen().tocsc().indptr) >= 0)
    train = b.arrays["train_indices"]
    cold = [i for i in cold if i not in set(train.tolist())][:5]
    assert cold
    sims = []
    for i in cold:
        f = {"text": (b.arrays["features"]["text"]["values"][i], True)}
        v = placer.place(f)
        want = b.arrays["item_emb"][i]
        sims.append(float(v @ want / np.linalg.norm(v) / np.linalg.norm(want)))
    assert min(sims) > 0.8, sims


def test_models_without_usable_features_refuse_new_items(data_folder, tmp_path):
    run = _train(data_folder, tmp_path, "lightgcn")
    bundle = export_bundle(run.run_dir, tmp_path / "b")
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["modalities"] = {}
    (bundle / "bundle.json").write_text(json.dumps(meta))
    client, _ = make_client(bundle, tmp_path)
    r = client.put("/v1/items/n", json={"text": "group 1"}, headers=KEY)
    assert r.status_code == 409 and "cannot place new items" in r.json()["detail"]


def test_knn_placement_for_feature_models(data_folder, tmp_path):
    from prismrec.errors import PrismrecError

    run = _train(data_folder, tmp_path, "vbpr")
    bundle = export_bundle(run.run_dir, tmp_path / "b")
    client, app = make_client(bundle, tmp_path)
    r = client.put("/v1/items/n", json={"text": "group 3"}, headers=KEY)
    assert r.status_code == 201 and r.json()["method"] == "knn"
    with pytest.raises(PrismrecError, match="needs a LIRDRec bundle"):
        make_client(bundle, tmp_path, cold_start="model")


def test_ann_index_for_large_catalogues(tmp_path):
    bundle = synthetic_bundle(tmp_path / "syn", n_items=3000, n_users=50, dim=16)
    client, app = make_client(bundle, tmp_path, ann_threshold=1000)
    svc = app.state.service
    assert svc.index.kind.startswith("ivf")
    hits = 0
    for user in svc.user_ids[:20]:
        got = [x["item"] for x in client.post("/v1/recommend", json={"user": user, "k": 10}, headers=KEY).json()["items"]]
        u = svc.user_index[user]
        s = svc.user_emb[u] @ svc.item_emb.T
        s[svc.seen(u)] = -np.inf
        exact = [svc.item_ids[i] for i in np.argsort(-s)[:10]]
        assert not {svc.item_ids[i] for i in svc.seen(u)} & set(got) and len(got) == 10
        hits += len(set(got) & set(exact))
    assert hits / 200 > 0.8
    idx = ItemIndex(np.eye(4, dtype=np.float32), ann_threshold=100)
    idx.upsert(4, np.asarray([0, 0, 0, 5], np.float32))
    assert idx.search(np.asarray([0, 0, 0, 1.0]), 1)[0].tolist() == [4]
    idx.upsert(4, np.asarray([0, 0, 5, 0], np.float32))
    assert idx.search(np.asarray([0, 0, 0, 1.0]), 1)[0].tolist() == [3]


def test_web_page_and_image_route(lird, tmp_path):
    from PIL import Image

    client, app = make_client(lird[1], tmp_path)
    page = client.get("/")
    assert page.status_code == 200 and "/v1/recommend/session" in page.text
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    img = base64.b64encode(buf.getvalue()).decode()
    r = client.put("/v1/items/pic", json={"text": "group 1", "image": img}, headers=KEY)
    assert r.status_code == 201
    got = client.get("/v1/items/pic/image")
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert client.get("/v1/users?limit=3", headers=KEY).json()["users"] == app.state.service.user_ids[:3]


@pytest.mark.skipif(chromium() is None, reason=NO_CHROMIUM)
def test_web_page_in_headless_chromium(lird, tmp_path):
    """The page, driven by its address (#key=...&user=...), fetches and shows the user's recommendations in a
    real browser: no console error, a screenshot that is not blank, the cards of the expected items."""
    import re
    import socket
    import threading
    import time

    import uvicorn

    _, app = make_client(lird[1], tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.1)
        svc = app.state.service
        user = svc.user_ids[3]
        want = [x["item"] for x in svc.recommend_user(user, 5, True)]
        done = "document.getElementById('results').dataset.method || document.getElementById('status').className === 'err'"
        shown = "[...document.querySelectorAll('#results .card')].map(c => c.dataset.item)"
        page = load_page(f"http://127.0.0.1:{port}/#key=secret&user={user}&k=5", tmp_path / "profile", wait_for=done,
                         evaluate={"method": "document.getElementById('results').dataset.method",
                                   "shown": shown, "status": "document.getElementById('status').textContent"})
        assert page.console_errors == [], page.console_errors
        assert page.values["method"] == "model", page.values
        assert page.values["shown"] == want
        assert 'data-method="model"' in page.dom
        assert re.findall(r'class="card" data-item="([^"]+)"', page.dom[page.dom.index('id="results"'):]) == want
        stats = page.screenshot_stats()
        assert stats["colours"] > 20 and stats["ink"] > 0.01, stats  # the page was drawn, not blank
        session = ",".join(svc.item_ids[:2])
        page = load_page(f"http://127.0.0.1:{port}/#key=secret&session={session}&k=4", tmp_path / "profile2",
                         wait_for=done, evaluate={"method": "document.getElementById('results').dataset.method",
                                                  "shown": shown})
        assert page.console_errors == [], page.console_errors
        assert page.values["method"] == "item_mean" and len(page.values["shown"]) >= 4, page.values
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_put_with_an_image_only_uses_the_image_encoder(data_folder, tmp_path):
    """A bundle whose image features name their encoder: PUT with a photo (base64) places the item by it."""
    from PIL import Image

    from prismrec.features.encoders import ImageEncoder

    class ColourImage(ImageEncoder):  # stand-in for EfficientNet: mean colour -> the image feature space
        def __init__(self):
            Encoder.__init__(self, "image", "colour", "1", DIM, {})

        def _forward(self, batch):
            out = np.zeros((len(batch), DIM), np.float32)
            out[:, :3] = batch.mean(axis=(2, 3))
            return out

    run = _train(data_folder, tmp_path, "vbpr")
    bundle = export_bundle(run.run_dir, tmp_path / "b")
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["modalities"]["image"] = {"kind": "image", "encoder": "colour"}
    (bundle / "bundle.json").write_text(json.dumps(meta))
    app = create_app(bundle, ServeSettings(api_key="secret", state_dir=tmp_path / "s"),
                     encoders={"text": GroupText(), "image": ColourImage()})
    client = TestClient(app)
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (250, 10, 10)).save(buf, format="JPEG")
    photo = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    r = client.put("/v1/items/photo-only", json={"image": photo}, headers=KEY)
    assert r.status_code == 201 and r.json()["modalities"] == ["image"], r.text
    r = client.put("/v1/items/both", json={"text": "group 1", "image": photo}, headers=KEY)
    assert r.json()["modalities"] == ["image", "text"]
    bad = base64.b64encode(b"definitely not a jpeg").decode()
    r = client.put("/v1/items/bad", json={"image": bad}, headers=KEY)
    assert r.status_code == 415 and "could not be decoded" in r.json()["detail"]  # not an image: 415
