import numpy as np
import pytest
import torch

from seq_checks import check_learns, check_round_trip_and_sessions, cyclic_dataset, fit


@pytest.mark.parametrize("name", ["sasrec", "sasrecf"])
def test_sasrec_learns_next_item(name):
    check_learns(name)


@pytest.mark.parametrize("name", ["sasrec", "sasrecf"])
def test_sasrec_round_trip_and_sessions(name):
    check_round_trip_and_sessions(name)


def test_sampled_softmax_learns():
    check_learns("sasrec", ["loss_type=sampled", "num_sampled=10"], epochs=20)


def test_feature_only_sasrec_and_missing_features():
    """use_ids=false: items are their projected features only; a missing image gives no NaN."""
    run = fit("sasrecf", cyclic_dataset(missing=np.array([0, 5])), ["use_ids=false"], 2)
    assert not run.model.item_embedding.weight.requires_grad
    with torch.no_grad():
        e = run.model.item_embeddings()
    assert torch.isfinite(e).all()


def test_padding_does_not_change_the_representation():
    """Left padding is masked: the same session encoded in a longer window gives the same output."""
    run = fit("sasrec", cyclic_dataset(), [], 1)
    m = run.model.eval()
    with torch.no_grad():
        full = m.encode(torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]]))
        short = m.encoder(m.token_embeddings()[torch.tensor([[3, 4, 5]])], torch.tensor([[3, 4, 5]]))
    # positions are counted from the end, so the last three positions carry the same embeddings
    assert torch.allclose(full, short, atol=1e-5)
