import torch

from seq_checks import check_learns, check_round_trip_and_sessions, cyclic_dataset, fit


def test_gru4rec_learns_next_item():
    check_learns("gru4rec", epochs=20)


def test_gru4recf_learns_and_round_trips():
    check_learns("gru4recf", epochs=20)
    check_round_trip_and_sessions("gru4recf")


def test_padding_never_enters_the_recurrent_state():
    """A session encoded with and without left padding gives the same representation, and every
    position's output equals the output of the prefix ending there."""
    m = fit("gru4rec", cyclic_dataset(), [], 1).model.eval()
    with torch.no_grad():
        padded = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]])
        x = m.tokens.table()[padded]
        last = m.encode_inputs(x, padded)
        short = m.encode_inputs(x[:, -3:], padded[:, -3:])
        allpos = m.encode_inputs(x, padded, all_positions=True)
        prefix = m.encode_inputs(x[:, :-1], padded[:, :-1])
    assert torch.allclose(last, short, atol=1e-6)
    assert torch.allclose(allpos[:, -1], last, atol=1e-6)
    assert torch.allclose(allpos[:, -2], prefix, atol=1e-6)
    assert torch.all(allpos[:, :5] == 0)
