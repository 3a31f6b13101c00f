"""prismrec explain: gradient contributions of history items and modalities, text, JSON and plot."""

import json

import numpy as np
import pytest

from prismrec.errors import PrismrecError
from prismrec.evaluate.explain import explain_user

from conftest import CliProcess
from seq_checks import cyclic_dataset, fit


@pytest.fixture(scope="module")
def trained():
    return fit("sasrecf", cyclic_dataset(), [], 25)


def test_latest_item_explains_the_next_item(trained):
    """In the cyclic data the next item is a function of the last one: the last history item must
    contribute the most to the top recommendation, which is mostly the successor of the last item."""
    ds = trained.dataset
    last_is_best, successor_first = 0, 0
    for u in range(20):
        ex = explain_user(trained, ds.user_ids[u], k=3)
        last = int(ex.history[-1][1:])
        successor_first += ex.recommended[0] == f"i{(last + 1) % 40}"
        last_is_best += int(np.argmax(ex.by_item[0])) == len(ex.history) - 1
    assert last_is_best >= 16 and successor_first >= 10, (last_is_best, successor_first)
    share = ex.modality_share()
    assert set(ex.parts) == {"id", "image", "text"}
    assert np.allclose(share.sum(1), 1.0) and (share >= 0).all()
    assert "most helpful history items" in ex.text()
    d = ex.as_dict()
    assert [r["rank"] for r in d["recommendations"]] == [1, 2, 3]


def test_plot_is_written(trained, tmp_path):
    ex = explain_user(trained, trained.dataset.user_ids[0], k=2)
    path = ex.plot(tmp_path / "sub" / "u.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_general_models_are_refused():
    from prismrec.runs import train_run

    run = train_run("bpr", cyclic_dataset(), None, epochs=1)
    with pytest.raises(PrismrecError, match="sequential"):
        explain_user(run, run.dataset.user_ids[0])


def test_cli_explain(tmp_path):
    run = tmp_path / "run"
    res = CliProcess("train", "--model", "sasrec", "--data", "demo", "--out", run, "--epochs", "1",
                     "--set", "embedding_size=16", "--set", "max_len=10").result()
    assert res.returncode == 0, str(res)
    user = json.loads(CliProcess("recommend", run, "--user", "0", "--json").result().stdout)[0]["user"]
    res = CliProcess("explain", run, "--user", user, "-k", "2").result()
    assert res.returncode == 0, str(res)
    assert "modalities: id 100%" in res.stdout
    assert (run / "explain" / f"{user}.png").is_file()
    res = CliProcess("explain", run, "--user", "no-such-user").result()
    assert res.returncode == 2 and "unknown user id" in res.stderr
