"""Batch inference: `prismrec recommend RUN --users FILE|all --out recs.parquet|recs.csv` and its API.

The files must hold exactly the rows ``Run.recommend`` returns for the same users, whatever the chunk size.
"""

from __future__ import annotations

import pandas as pd
import pytest

import prismrec.api as api
from prismrec.errors import PrismrecError
from prismrec.runs import load_run

from conftest import CliProcess, write_mmrec

SMALL = {"embedding_size": 8, "n_layers": 1,
         "train": {"batch_size": 64, "learning_rate": 0.01, "topk": [5, 10], "valid_metric": "recall@10", "threads": 1}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    folder, _ = write_mmrec(root / "data", "toy")
    out = root / "run"
    api.train("lightgcn", str(folder), out, epochs=2, overrides=SMALL)
    return out


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(run_dir)


def read(path):
    """A written file as a frame with the dtypes of ``Run.recommend`` (ids and titles as text)."""
    if path.suffix == ".csv":
        frame = pd.read_csv(path, dtype={"user": str, "item": str, "title": str}, keep_default_na=False)
    else:
        frame = pd.read_parquet(path)
    frame = frame.astype({"user": object, "item": object, "title": object, "score": "float32"})
    return frame.reset_index(drop=True)


def expected(run, users, k):
    frame = run.recommend(users, k)
    return frame.astype({"user": object, "item": object, "title": object, "score": "float32"})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_all_users_in_chunks_equal_recommend(run, run_dir, tmp_path, suffix):
    out = tmp_path / f"recs{suffix}"
    res = api.recommend_batch(run_dir, out, "all", k=4, chunk_users=7)  # 60 users: 9 chunks, the last one short
    users = list(run.dataset.user_ids)
    want = expected(run, users, 4)
    assert res["users"] == len(users) == 60 and res["rows"] == len(want) and res["format"] == suffix[1:]
    got = read(out)
    assert list(got.columns) == ["user", "rank", "item", "score", "title"]
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert got.groupby("user", sort=False)["rank"].apply(list).map(lambda r: r == [1, 2, 3, 4]).all()
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic writer left no temporary file


def test_recommend_chunks_of_any_size_give_the_same_rows(run):
    users = list(run.dataset.user_ids[5:30])
    one = run.recommend(users, 6)
    for chunk in (1, 4, 100):
        parts = list(run.recommend_chunks(users, 6, chunk_users=chunk))
        assert len(parts) == -(-len(users) // chunk)
        pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), one)


def test_a_file_of_users_one_per_line_or_csv(run, run_dir, tmp_path):
    users = [str(u) for u in run.dataset.user_ids[[12, 3, 40, 3]]]  # any order, a user may repeat
    plain = tmp_path / "users.txt"
    plain.write_text("\n".join(users[:2]) + "\n\n" + "\n".join(users[2:]) + "\n")
    table = tmp_path / "users.csv"
    table.write_text("segment,user\n" + "".join(f"a,{u}\n" for u in users))
    want = expected(run, users, 5)
    for src, out in ((plain, tmp_path / "a.csv"), (table, tmp_path / "b.parquet"), (users, tmp_path / "c.csv")):
        api.recommend_batch(run_dir, out, src, k=5)  # a file, or the ids themselves (recommend --user U --out F)
        pd.testing.assert_frame_equal(read(out), want, check_dtype=False)


def test_unknown_user_names_the_file_and_line(run, run_dir, tmp_path):
    users = tmp_path / "users.txt"
    users.write_text(f"{run.dataset.user_ids[0]}\n\nnobody\n{run.dataset.user_ids[1]}\nghost\n")
    with pytest.raises(PrismrecError) as err:
        api.recommend_batch(run_dir, tmp_path / "recs.csv", users)
    msg = str(err.value)
    assert str(users) in msg and "line 3" in msg and "'nobody'" in msg and "1 more" in msg and "5" in msg
    assert not (tmp_path / "recs.csv").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("customer,score\n1,2\n")
    with pytest.raises(PrismrecError, match="no 'user' column"):
        api.recommend_batch(run_dir, tmp_path / "recs.csv", bad)
    with pytest.raises(PrismrecError, match=r"\.csv or \.parquet"):
        api.recommend_batch(run_dir, tmp_path / "recs.json", "all")


def test_cli_batch(run, run_dir, tmp_path):
    missing = tmp_path / "missing.txt"
    missing.write_text(f"{run.dataset.user_ids[2]}\nnobody\n")
    procs = {  # independent interpreters, started side by side
        "all": CliProcess("recommend", run_dir, "--users", "all", "--out", tmp_path / "all.parquet", "-k", "3"),
        "unknown": CliProcess("recommend", run_dir, "--users", missing, "--out", tmp_path / "u.csv"),
    }
    res = procs["all"].result()
    assert res.returncode == 0, str(res)
    assert f"for 60 users to {tmp_path / 'all.parquet'}" in res.stdout
    pd.testing.assert_frame_equal(read(tmp_path / "all.parquet"), expected(run, list(run.dataset.user_ids), 3),
                                  check_dtype=False)
    res = procs["unknown"].result()
    assert res.returncode == 2 and str(missing) in res.stderr and "line 2" in res.stderr, str(res)
    assert "Traceback" not in res.stderr and not (tmp_path / "u.csv").exists()


def test_cli_options_are_checked_before_anything_runs(run_dir):
    from typer.testing import CliRunner

    from prismrec.cli.main import app

    for args, needle in ((["--users", "all"], "--out"), ([], "neither"), (["--user", "1", "--users", "all"], "both"),
                         (["--user", "1", "--out", "r.csv", "--json"], "choose one")):
        res = CliRunner().invoke(app, ["recommend", str(run_dir), *args])
        assert isinstance(res.exception, PrismrecError) and needle in str(res.exception), (args, res.output)
