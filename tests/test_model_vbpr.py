"""VBPR tests (the shared checks live in model_checks.py, also used by the FREEDOM and BM3 tests).

Data: conftest's block-structured tiny interactions (60 users x 60 items, group = id % 4) with item
features that encode the item's group, so both the IDs and the features are learnable.
"""

from __future__ import annotations

import torch

from prismrec.data.training import TrainingData
from prismrec.models import MODELS

from model_checks import (N_ITEMS, check_learns, check_missing_features, check_modality_counts,
                          check_shapes_and_round_trip, fit, multimodal_dataset, scores)


VBPR = ["vbpr.embedding_size=16", "vbpr.reg_weight=0.1"]


def test_vbpr_learns():
    check_learns("vbpr", VBPR, epochs=8, margin=0.3)


def test_vbpr_shapes_and_checkpoint_round_trip():
    check_shapes_and_round_trip("vbpr", VBPR)


def test_vbpr_missing_features():
    check_missing_features("vbpr", VBPR)


def test_vbpr_any_number_of_modalities():
    check_modality_counts("vbpr", VBPR)


def test_vbpr_item_vector_is_id_then_one_linear_map_of_the_concatenated_features():
    run = fit("vbpr", multimodal_dataset(), VBPR, 1)
    m = run.model
    d = 16
    assert m.user_embedding.shape == (m.n_users, 2 * d) and m.item_embedding.shape == (N_ITEMS, d)
    with torch.no_grad():
        q = m.item_vectors()
        concat = torch.cat([m.features.tables[n].values for n in m.features.names], dim=1)
        weight = torch.cat([layer.weight for layer in m.features.linears()], dim=1)
        expected = concat @ weight.T + m.feature_bias
    assert q.shape == (N_ITEMS, 2 * d)
    assert torch.equal(q[:, :d], m.item_embedding)
    torch.testing.assert_close(q[:, d:], expected)
    # score = p_u . q_i
    torch.testing.assert_close(scores(m, torch.tensor([3])), (m.user_embedding[3] @ q.T)[None].detach())
    # MMRec's init: one Xavier-normal Linear over 16 + 12 inputs -> every block has std sqrt(2 / (28 + 16))
    cls = MODELS.get("vbpr")
    fresh = cls(cls.Config(embedding_size=256), TrainingData.from_split(run.dataset, run.split))
    w = torch.cat([layer.weight.detach() for layer in fresh.features.linears()], dim=1)
    assert abs(float(w.std()) - (2 / (28 + 256)) ** 0.5) < 0.01


def test_vbpr_features_are_fixed_and_diagnostic_groups():
    run = fit("vbpr", multimodal_dataset(), VBPR, 1)
    m = run.model
    assert not any("tables" in k for k, _ in m.named_parameters())  # VBPR keeps the raw features fixed
    groups = m.diagnostic_groups()
    assert groups["id"] == [m.item_embedding]
    expected = [*m.features.proj.parameters(), m.feature_bias]
    assert {id(p) for p in groups["feature"]} == {id(p) for p in expected}
