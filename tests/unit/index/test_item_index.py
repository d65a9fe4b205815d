"""ItemIndex against the exact retriever: recall, exclusion, adds, deactivation, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamrec.errors import ConfigError, ModelError
from streamrec.index.config import IndexKind, IndexSettings
from streamrec.index.factory import auto_nlist
from streamrec.index.item_index import META_FILE, ItemIndex
from streamrec.index.retriever import ExactRetriever, Retriever

# Small-catalog settings: 3,000 items give 16 IVF cells; PQ needs 256 * 8 = 2,048 points.
SMALL = {"nlist": 16, "nprobe": 8, "min_points_per_list": 8, "pq_m": 4, "hnsw_ef_search": 64}
KINDS: list[IndexKind] = ["flat", "ivf_flat", "hnsw", "ivf_pq"]


def settings(kind: IndexKind, **extra: object) -> IndexSettings:
    return IndexSettings.model_validate({"kind": kind, **SMALL, **extra})


def ids_of(rows: list[list[tuple[str, float]]]) -> list[list[str]]:
    return [[item_id for item_id, _ in row] for row in rows]


def recall(got: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(g) & set(t)) / len(t) for g, t in zip(got, truth, strict=True)]))


@pytest.fixture(scope="module", params=KINDS)
def built(request: pytest.FixtureRequest, catalog: tuple[list[str], np.ndarray]) -> ItemIndex:
    ids, vectors = catalog
    return ItemIndex.build(ids, vectors, settings(request.param), version="v1")


def test_both_implementations_satisfy_the_protocol(built: ItemIndex) -> None:
    assert isinstance(built, Retriever)
    assert isinstance(ExactRetriever(4), Retriever)


def test_built_kind_is_the_requested_one_on_this_catalog(built: ItemIndex) -> None:
    assert built.layout_kind == built._settings.kind
    assert (built.size, built.dim, built.version) == (3000, 16, "v1")


def test_recall_at_20_against_exact_search(
    built: ItemIndex, catalog: tuple[list[str], np.ndarray], queries: np.ndarray
) -> None:
    exact = ExactRetriever.build(*catalog)
    got = built.search(queries, 20)
    truth = exact.search(queries, 20)
    assert recall(ids_of(got), ids_of(truth)) >= (1.0 if built.layout_kind == "flat" else 0.9)
    # Flat, HNSW and the refined IVF-PQ report exact inner products for what they return.
    first_scores = np.array([row[0][1] for row in got])
    best_rows = [int(row[0][0][1:]) for row in got]
    direct = np.einsum("bd,bd->b", queries, catalog[1][best_rows])
    np.testing.assert_allclose(first_scores, direct, rtol=1e-4, atol=1e-5)


def test_rows_are_sorted_best_first(built: ItemIndex, queries: np.ndarray) -> None:
    for row in built.search(queries, 30):
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)


def test_excluded_items_never_returned_and_rows_stay_k_long(
    built: ItemIndex, queries: np.ndarray
) -> None:
    top = ids_of(built.search(queries, 50))
    # Exclude each query's own top 50: the next 50 must come back instead.
    rows = built.search(queries, 50, exclude=[set(t) for t in top])
    for excluded, row in zip(top, ids_of(rows), strict=True):
        assert len(row) == 50
        assert not set(row) & set(excluded)


def test_k_larger_than_catalog_returns_every_eligible_item(
    catalog: tuple[list[str], np.ndarray], queries: np.ndarray
) -> None:
    ids, vectors = catalog
    for kind in KINDS:
        index = ItemIndex.build(ids[:40], vectors[:40], settings(kind), version="v1")
        rows = index.search(queries[:2], 100, exclude=[{"i0", "i1"}, set()])
        assert [len(r) for r in rows] == [38, 40], kind


@pytest.mark.parametrize("kind", KINDS)
def test_deactivated_items_never_returned(
    kind: IndexKind, catalog: tuple[list[str], np.ndarray], queries: np.ndarray
) -> None:
    ids, vectors = catalog
    index = ItemIndex.build(ids, vectors, settings(kind), version="v1")
    hot = {item for row in ids_of(index.search(queries, 30)) for item in row}
    index.deactivate(sorted(hot))
    assert index.size == 3000 - len(hot)
    assert index.tombstones == len(hot)
    rows = ids_of(index.search(queries, 30))
    assert all(len(r) == 30 for r in rows)
    assert not {item for row in rows for item in row} & hot


@pytest.mark.parametrize("kind", KINDS)
def test_added_item_is_found_without_rebuild_and_replaces_old_vector(
    kind: IndexKind, catalog: tuple[list[str], np.ndarray], queries: np.ndarray
) -> None:
    ids, vectors = catalog
    index = ItemIndex.build(ids, vectors, settings(kind), version="v1")
    # A vector aligned with the query and longer than any unit item wins the inner product.
    index.add(["new"], queries[:1] * 3)
    assert index.search(queries[:1], 1)[0][0][0] == "new"
    index.add(["new"], -queries[:1])  # re-adding replaces: now the worst match
    assert "new" not in ids_of(index.search(queries[:1], 50))[0]
    assert index.size == 3001


def test_ivf_pq_without_refine_keeps_only_codes_and_still_finds_neighbours(
    catalog: tuple[list[str], np.ndarray], queries: np.ndarray, tmp_path: Path
) -> None:
    ids, vectors = catalog
    index = ItemIndex.build(ids, vectors, settings("ivf_pq", refine_k_factor=0), version="v")
    truth = ids_of(ExactRetriever.build(ids, vectors).search(queries, 20))
    assert recall(ids_of(index.search(queries, 20)), truth) >= 0.5
    index.deactivate(truth[0][:5])
    assert not set(truth[0][:5]) & set(ids_of(index.search(queries[:1], 20))[0])
    index.save(tmp_path)
    refined = ItemIndex.build(ids, vectors, settings("ivf_pq"), version="v")
    refined.save(tmp_path / "refined")
    # 4-byte codes plus ids instead of the 64-byte vectors the refined index also keeps.
    plain_size = (tmp_path / "index.faiss").stat().st_size
    assert plain_size < 0.5 * (tmp_path / "refined" / "index.faiss").stat().st_size
    loaded = ItemIndex.load(tmp_path, IndexSettings(kind="flat", refine_k_factor=4))
    assert ids_of(loaded.search(queries, 20)) == ids_of(index.search(queries, 20))


def test_small_catalogs_fall_back_and_still_accept_adds(
    catalog: tuple[list[str], np.ndarray],
) -> None:
    ids, vectors = catalog
    assert ItemIndex.build(ids[:10], vectors[:10], settings("ivf_flat"), "v").layout_kind == "flat"
    fallback = ItemIndex.build(ids[:1000], vectors[:1000], settings("ivf_pq"), "v")
    assert fallback.layout_kind == "ivf_flat"
    empty = ItemIndex.build([], np.empty((0, 16), np.float32), settings("ivf_pq"), "v")
    assert empty.layout_kind == "flat"
    assert empty.search(vectors[:1], 5) == [[]]
    empty.add(ids[:3], vectors[:3])
    assert len(empty.search(vectors[:1], 5)[0]) == 3


def test_auto_nlist_grows_with_the_catalog(catalog: tuple[list[str], np.ndarray]) -> None:
    assert [auto_nlist(n) for n in (0, 100, 100_000, 1_000_000)] == [1, 16, 512, 2048]
    ids, vectors = catalog
    auto = IndexSettings(kind="ivf_flat", min_points_per_list=8)
    assert ItemIndex.build(ids, vectors, auto, "v")._layout.nlist == 128  # 2*sqrt(3000) = 110


def test_pq_m_must_divide_dimension(catalog: tuple[list[str], np.ndarray]) -> None:
    with pytest.raises(ConfigError, match="divide"):
        ItemIndex.build(*catalog, settings("ivf_pq", pq_m=5), version="v")


def test_bad_inputs_raise_model_error(built: ItemIndex, queries: np.ndarray) -> None:
    with pytest.raises(ModelError, match="dimension"):
        built.search(queries[:, :8], 5)
    with pytest.raises(ModelError, match="NaN"):
        built.search(np.full((1, 16), np.nan, np.float32), 5)
    with pytest.raises(ModelError, match="one set per"):
        built.search(queries, 5, exclude=[set()])
    with pytest.raises(ModelError, match="k must be"):
        built.search(queries, 0)
    with pytest.raises(ModelError, match="twice"):
        built.add(["a", "a"], queries[:2])


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_keeps_results_ids_and_tombstones(
    kind: IndexKind, catalog: tuple[list[str], np.ndarray], queries: np.ndarray, tmp_path: Path
) -> None:
    ids, vectors = catalog
    index = ItemIndex.build(ids, vectors, settings(kind), version="m7")
    index.deactivate(["i1", "i2"])
    index.add(["late"], queries[:1])
    index.save(tmp_path / "idx")
    loaded = ItemIndex.load(tmp_path / "idx")
    assert (loaded.version, loaded.size, loaded.dim, loaded.tombstones) == ("m7", 2999, 16, 2)
    assert loaded.layout_kind == index.layout_kind
    assert ids_of(loaded.search(queries, 20)) == ids_of(index.search(queries, 20))
    meta = json.loads((tmp_path / "idx" / META_FILE).read_text())
    assert meta["kind"] == kind and meta["created_at"] == index.created_at


def test_load_overrides_search_settings_but_not_structure(
    catalog: tuple[list[str], np.ndarray], tmp_path: Path
) -> None:
    ItemIndex.build(*catalog, settings("ivf_flat"), version="v").save(tmp_path)
    loaded = ItemIndex.load(tmp_path, IndexSettings(kind="flat", nprobe=16))
    assert loaded.layout_kind == "ivf_flat"
    assert loaded._settings.nprobe == 16


def test_an_index_saved_with_a_setting_since_dropped_still_loads(
    catalog: tuple[list[str], np.ndarray], tmp_path: Path
) -> None:
    ItemIndex.build(*catalog, settings("flat"), version="v").save(tmp_path)
    meta_path = tmp_path / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["settings"]["retired_knob"] = 3  # settings now refuse unknown fields
    meta_path.write_text(json.dumps(meta))
    assert ItemIndex.load(tmp_path).size == len(catalog[0])


def test_load_rejects_missing_and_inconsistent_folders(
    catalog: tuple[list[str], np.ndarray], tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match="not a saved item index"):
        ItemIndex.load(tmp_path)
    ItemIndex.build(*catalog, settings("flat"), version="v").save(tmp_path)
    meta_path = tmp_path / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["slots"] = meta["slots"][:-1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="mixes"):
        ItemIndex.load(tmp_path)
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="format_version"):
        ItemIndex.load(tmp_path)
