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


# ------------------------------------------------------- SASRec-F with UniSRec's/ANT's MoE item encoder
MOE = ["feature_encoder=moe", "scoring=cosine", "n_experts=4"]


def test_moe_encoder_learns_next_item():
    """feature_encoder: moe (whitening experts) with cosine / temperature scoring trains past its untrained self."""
    check_learns("sasrecf", MOE)


def test_moe_encoder_round_trip_and_sessions():
    check_round_trip_and_sessions("sasrecf", MOE)


def test_moe_encoder_is_ants_layer_and_the_default_stays_linear():
    from prismrec.models.layers import ModalityProjections
    from prismrec.models.moe import MoEAdaptor, MoEProjections
    from prismrec.models.transfer import modules

    assert modules.MoEAdaptor is MoEAdaptor  # one layer, shared by ANT and SASRec-F (not a copy)
    ds = cyclic_dataset()
    default = fit("sasrecf", ds, [], 0).model
    assert isinstance(default.tokens.features, ModalityProjections) and default.config.scoring == "dot"
    run = fit("sasrecf", ds, [*MOE, "use_ids=false"], 1)
    feats = run.model.tokens.features
    assert isinstance(feats, MoEProjections) and set(feats.names) == {"image", "text"}
    assert all(a.n_experts == 4 and a.kind == "whiten" and not a.per_expert for a in feats.adaptors.values())
    per_expert = fit("sasrecf", ds, [*MOE, "expert_dropout=per_expert"], 1).model.tokens.features  # ANT's masks
    assert all(a.per_expert for a in per_expert.adaptors.values())
    assert not run.model.item_embedding.weight.requires_grad  # inductive: features only
    m = run.model.eval()
    with torch.no_grad():
        items = m.item_embeddings()
        u = m.encode(torch.tensor([[0, 0, 3, 4, 5]]))
    # cosine scoring: unit item vectors, user vectors of norm 1 / temperature
    torch.testing.assert_close(items.norm(dim=-1), torch.ones(len(items)))
    torch.testing.assert_close(u.norm(dim=-1), torch.full((1,), 1 / m.config.temperature))


def test_moe_missing_feature_uses_the_learned_vector():
    run = fit("sasrecf", cyclic_dataset(missing=np.array([0, 5])), MOE, 1)
    feats = run.model.tokens.features.eval()
    with torch.no_grad():
        image = feats("image")
    torch.testing.assert_close(image[[0, 5]], feats.missing["image"].expand(2, -1))
    assert torch.isfinite(image).all()


@pytest.mark.parametrize("override, message", [
    ("sasrecf.feature_encoder=mlp", "feature_encoder"),
    ("sasrecf.n_expert=4", "Did you mean 'n_experts'"),
    ("sasrecf.scoring=l2", "scoring"),
    ("sasrecf.temperature=0", "temperature"),
    ("sasrecf.expert_dropout=each", "expert_dropout"),
])
def test_moe_settings_are_validated(override, message):
    from prismrec.errors import ConfigError
    from prismrec.runs import build_config

    with pytest.raises(ConfigError, match=message):
        build_config("sasrecf", cyclic_dataset(), overrides=[override])


def test_adaptor_dropout_is_searched_only_with_the_moe_encoder():
    from prismrec.runs import build_config
    from prismrec.search_space import applicable_space, model_space

    ds = cyclic_dataset()
    full = model_space("sasrecf")
    assert {"train.learning_rate", "n_layers", "dropout", "adaptor_dropout"} <= set(full)
    linear = applicable_space("sasrecf", full, build_config("sasrecf", ds).params)
    moe = applicable_space("sasrecf", full, build_config("sasrecf", ds, overrides=["sasrecf.feature_encoder=moe"]).params)
    assert "adaptor_dropout" not in linear and set(linear) == set(full) - {"adaptor_dropout"}
    assert moe == full


def test_moe_encoder_checkpoint_round_trip_from_disk(tmp_path):
    """A saved MoE run (run folder, best weights) reloads with the same settings and the same scores."""
    from conftest import write_mmrec
    from prismrec.models.moe import MoEProjections
    from prismrec.runs import load_run, train_run

    folder, _ = write_mmrec(tmp_path / "data", n_users=40, n_items=30, features=8)
    run = train_run("sasrecf", str(folder), tmp_path / "run", seed=0, epochs=2,
                    overrides=["train.batch_size=32", "train.topk=[5,10]", "train.threads=1", "max_len=8",
                               "embedding_size=8", *MOE])
    back = load_run(tmp_path / "run")
    assert isinstance(back.model.tokens.features, MoEProjections) and back.config.params == run.config.params
    users = torch.arange(back.model.n_users)
    for m in (run.model, back.model):
        m.eval()
        m.prepare_scoring(back.split.history("test"))
    with torch.no_grad():
        torch.testing.assert_close(back.model.score(users), run.model.score(users))


def test_transformer_initialisation_and_feed_forward_width():
    """init: normal draws every transformer weight (attention Q/K/V included) from N(0, 0.02), as RecBole's
    SASRec, UniSRec and ANT; the default keeps torch's; ff_mult sets the feed-forward width."""
    from prismrec.models.sequential.layers import CausalTransformer

    torch.manual_seed(0)
    normal = CausalTransformer(128, 50, n_layers=2, n_heads=2, init="normal", ff_mult=1)
    torch.manual_seed(0)
    default = CausalTransformer(128, 50, n_layers=2, n_heads=2)
    for net, ff in ((normal, 128), (default, 512)):
        block = net.layers.layers[0]
        assert block.linear1.weight.shape == (ff, 128)
    qkv = normal.layers.layers[1].self_attn.in_proj_weight
    assert abs(qkv.std().item() - 0.02) < 0.002 and normal.layers.layers[1].self_attn.in_proj_bias.abs().max() == 0
    ff_n, ff_d = normal.layers.layers[0].linear1, default.layers.layers[0].linear1
    assert abs(ff_n.weight.std().item() - 0.02) < 0.002 and ff_n.bias.abs().max() == 0
    assert ff_d.weight.std().item() > 0.04   # torch's Kaiming-uniform at fan-in 128: std 1 / sqrt(3 * 128) = 0.051
    with pytest.raises(ValueError, match="init"):
        CausalTransformer(8, 5, init="xavier")
    run = fit("sasrecf", cyclic_dataset(), ["init=normal", "ff_mult=1"], 1)
    assert run.model.encoder.layers.layers[0].linear1.out_features == run.model.config.embedding_size
