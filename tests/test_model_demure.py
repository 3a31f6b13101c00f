import json

import numpy as np
import pytest
import torch

from prismrec.models.sequential.base import WindowSampler
from prismrec.runs import train_run
from seq_checks import SMALL, check_learns, check_round_trip_and_sessions, cyclic_dataset, fit


def window_batch(run, size=32):
    indptr, items = run.split.sequences(("train",))
    sampler = WindowSampler(indptr, items, run.model.max_len)
    return next(sampler.epoch(np.random.default_rng(0), size, torch.device("cpu")))


def test_demure_learns_next_item():
    check_learns("demure", ["warmup_epochs=2"])


def test_demure_round_trip_and_sessions():
    # view_op=mask adds learned mask vectors to the state dict
    check_round_trip_and_sessions("demure", ["warmup_epochs=0", "view_op=mask"])


@pytest.mark.parametrize("view_op", ["zero", "mask", "replace"])
def test_views_differ_exactly_where_marked(view_op):
    run = fit("demure", cyclic_dataset(), ["warmup_epochs=0", f"view_op={view_op}", "noise_ratio=0.25"], 1)
    model = run.model.train()
    batch = window_batch(run)
    seqs, last = batch["seqs"], batch["targets"][:, -1]
    torch.manual_seed(0)
    with torch.no_grad():
        parts, pos, neg, marks = model.views(seqs, last)
    assert model.training  # attribution ran in eval mode and restored the mode
    assert marks.parts == ["image", "text", "id"]
    noise, poi = marks.noise, marks.poi
    valid = (seqs != 0)[..., None]
    assert not (noise & poi).any() and not (noise & ~valid).any() and not (poi & ~valid).any()
    assert not noise[..., 2].any() and not poi[..., 2].any()  # the ID part is not a modality
    n = valid.sum((1, 2)) * 2
    k = torch.minimum((n * 0.25).round().long().clamp(min=1), n // 2)
    assert torch.equal(noise.sum((1, 2)), k) and torch.equal(poi.sum((1, 2)), k)
    # noise = the lowest contributions of its sequence, point-of-interests the highest
    s = marks.scores
    low = torch.where(noise, s, torch.full_like(s, -torch.inf)).amax((1, 2))
    high = torch.where(poi, s, torch.full_like(s, torch.inf)).amin((1, 2))
    assert (low <= high).all()
    for view, where in ((pos, noise), (neg, poi)):
        for j, name in enumerate(marks.parts):
            changed = (view[name] != parts[name]).any(-1)
            assert not (changed & ~where[..., j]).any(), name  # equal wherever nothing is marked
            if view_op == "replace":  # a random item may be the same item: nearly all marked cells change
                assert not where[..., j].any() or changed[where[..., j]].float().mean() > 0.8
            else:
                assert torch.equal(changed, where[..., j]), name
            if view_op == "zero":
                assert (view[name][where[..., j]] == 0).all()


def test_item_granularity_marks_whole_items():
    run = fit("demure", cyclic_dataset(), ["warmup_epochs=0", "granularity=item"], 1)
    batch = window_batch(run)
    with torch.no_grad():
        _, pos, _, marks = run.model.views(batch["seqs"], batch["targets"][:, -1])
    per_item = marks.noise.any(-1)
    assert per_item.any() and torch.equal(marks.noise, per_item[..., None].expand_as(marks.noise))
    assert (pos["id"][per_item] == 0).all() and (pos["image"][per_item] == 0).all()


def test_contrastive_term_only_after_warmup(tmp_path):
    run = train_run("demure", cyclic_dataset(), tmp_path / "run", overrides=[*SMALL, "warmup_epochs=2"], epochs=3)
    hist = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    by_epoch = {h["epoch"]: h for h in hist}
    assert "cl" not in by_epoch[1] and "cl" not in by_epoch[2] and "ce" in by_epoch[1]
    assert by_epoch[3]["cl"] > 0
    assert by_epoch[3]["noise_image"] + by_epoch[3]["noise_text"] == pytest.approx(1.0)
    # the same switch on a single batch
    model = run.model.train()
    batch = window_batch(run)
    model.on_epoch_start(2)
    out = model.loss(batch)
    assert "cl" not in out and torch.equal(out["loss"], out["ce"])
    model.on_epoch_start(3)
    for p in model.parameters():
        p.grad = None
    out = model.loss(batch)
    assert out["cl"] > 0 and torch.allclose(out["loss"], out["ce"] + 0.1 * out["cl"])
    # attribution's backward leaves no parameter gradient behind; the total loss trains the projections
    assert all(p.grad is None for p in model.parameters())
    out["loss"].backward()
    assert model.tokens.features.proj["image"].net.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("extra", [["view_op=replace"], ["use_ids=false", "granularity=item", "view_op=mask"]])
def test_missing_features_give_no_nan(extra):
    run = fit("demure", cyclic_dataset(missing=np.array([0, 5, 6])), ["warmup_epochs=0", *extra], 2)
    model = run.model.train()
    model.on_epoch_start(1)
    out = model.loss(window_batch(run))
    assert all(torch.isfinite(v).all() for v in out.values()) and "cl" in out
    with torch.no_grad():
        assert torch.isfinite(model.item_embeddings()).all()



@pytest.mark.parametrize("granularity", ["modality", "item"])
def test_missing_features_are_never_noise_or_point_of_interest(granularity):
    """A part whose feature is missing is the projection's learned "missing" vector, the same for every such
    item: it says nothing about the item, so it is neither a noise nor a point-of-interest candidate, and
    the views leave it as it is. Every item's image is missing but one in two."""
    missing = np.arange(0, 40, 2)
    run = fit("demure", cyclic_dataset(missing=missing), ["warmup_epochs=0", f"granularity={granularity}",
                                                          "noise_ratio=0.5"], 1)
    batch = window_batch(run)
    seqs = batch["seqs"]
    torch.manual_seed(0)
    with torch.no_grad():
        parts, pos, neg, marks = run.model.views(seqs, batch["targets"][:, -1])
    j = marks.parts.index("image")
    valid = seqs != 0
    lacks = valid & torch.isin(seqs - 1, torch.as_tensor(missing))
    assert lacks.any() and (valid & ~lacks).any()
    for where in (marks.noise, marks.poi):
        assert not where[..., j][lacks].any()
    for view in (pos, neg):
        assert torch.equal(view["image"][lacks], parts["image"][lacks])
    assert (marks.noise[..., j] | marks.poi[..., j])[valid & ~lacks].any()  # images that exist are marked
    if granularity == "modality":  # k counts the candidates: the available modality parts
        n = (valid & ~lacks).sum(1) + valid.sum(1)
        k = torch.minimum((n * 0.5).round().long().clamp(min=1), n // 2)
        assert torch.equal(marks.noise.sum((1, 2)), k) and torch.equal(marks.poi.sum((1, 2)), k)
    else:  # the ID and text parts of a marked item are altered, its missing image is not
        item = marks.noise.any(-1)
        text, ids = marks.parts.index("text"), marks.parts.index("id")
        assert item.any() and torch.equal(marks.noise[..., text], item) and torch.equal(marks.noise[..., ids], item)
        assert torch.equal(marks.noise[..., j], item & ~lacks)
