"""BM3: positive-pair batches, stop-gradient dropout targets, the three cosine losses, scoring."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from prismrec.models.base import l2_norm_reg

from model_checks import (check_learns, check_missing_features, check_modality_counts,
                             check_shapes_and_round_trip, fit, multimodal_dataset, scores)

ARGS = ["bm3.embedding_size=16"]
BATCH = {"users": torch.tensor([0, 1, 2, 3, 1]), "pos_items": torch.tensor([0, 5, 9, 7, 5])}


def test_bm3_learns():
    check_learns("bm3", ARGS, epochs=10, margin=0.35)


def test_bm3_shapes_and_checkpoint_round_trip():
    check_shapes_and_round_trip("bm3", ARGS)


def test_bm3_missing_features():
    check_missing_features("bm3", ARGS)


def test_bm3_any_number_of_modalities():
    check_modality_counts("bm3", ARGS)


def untrained(*overrides: str):
    model = fit("bm3", multimodal_dataset(), [*ARGS, *overrides], 0).model
    model.train()
    return model


def test_bm3_needs_no_negatives():
    model = untrained()
    assert model.sampler == "positives"
    out = model.loss(BATCH)  # no "neg_items"
    assert set(out) == {"loss", "reconstruction", "alignment", "masked", "reg"}
    assert torch.isfinite(out["loss"])


def test_bm3_loss_matches_the_formula_and_targets_carry_no_gradient():
    """With dropout 0 the target views are the representations themselves: the loss and its gradient
    must equal a hand-written BM3 loss whose targets are explicitly detached."""
    model = untrained("bm3.dropout=0.0", "bm3.reg_weight=0.1", "bm3.cl_weight=2.0")
    u, i = BATCH["users"], BATCH["pos_items"]
    out = model.loss(BATCH)
    out["loss"].backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    def c(a, b):
        return 1 - F.cosine_similarity(a, b.detach(), dim=-1).mean()

    hu, hi = model.forward()
    pred = model.predictor
    rec = c(pred(hu[u]), hi[i]) + c(pred(hi[i]), hu[u])
    align = masked = 0
    for name in model.features.names:
        h_m = model.features(name)[i]
        align = align + c(pred(h_m), hi[i])
        masked = masked + c(pred(h_m), h_m)
    reg = (hu.norm() + hi.norm()) / model.n_items  # MMRec EmbLoss on the full matrices
    expected = rec + 0.1 * reg + 2.0 * (align + masked)
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["reg"], l2_norm_reg(hu, hi))
    expected.backward()
    for n, p in model.named_parameters():
        if n in got:
            torch.testing.assert_close(got[n], p.grad, msg=n)
    assert "features.tables.image.values" in got  # MMRec fine-tunes the raw features


def test_bm3_dropout_makes_random_targets_from_the_global_rng():
    model = untrained("bm3.dropout=0.5")
    torch.manual_seed(0)
    a = model.loss(BATCH)["loss"]
    torch.manual_seed(0)
    b = model.loss(BATCH)["loss"]
    torch.manual_seed(1)
    c = model.loss(BATCH)["loss"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bm3_scores_are_predictor_outputs():
    model = untrained()
    s = scores(model, torch.tensor([2, 4]))
    with torch.no_grad():
        hu, hi = model.forward()
        expected = model.predictor(hu[[2, 4]]) @ model.predictor(hi).T
    torch.testing.assert_close(s, expected)
    # the cache is rebuilt after a training step
    model.train()
    model.loss(BATCH)
    assert model._cache is None


def test_bm3_diagnostic_groups():
    model = untrained()
    groups = model.diagnostic_groups()
    assert groups["id"] == [model.item_embedding]
    assert {id(p) for p in groups["feature"]} == {id(p) for p in model.features.proj.parameters()}
