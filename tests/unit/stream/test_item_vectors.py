"""The serving model's item vectors: lookups by id, adds and replacements from cold start, and
a table read once staying consistent while items are added."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.stream.item_vectors import ItemVectors


def test_adds_new_ids_and_replaces_known_ones_without_touching_a_table_already_read() -> None:
    vectors = ItemVectors(["a", "b"], np.eye(2))
    rows, matrix = vectors.table()
    vectors.add(["b", "c", "c"], [[5.0, 5.0], [1.0, 2.0], [3.0, 4.0]])
    assert vectors["b"].tolist() == [5.0, 5.0] and vectors["c"].tolist() == [3.0, 4.0]
    assert len(vectors) == 3 and list(vectors) == ["a", "b", "c"] and "c" in vectors
    # the pair read before the add is unchanged: a batch in flight keeps one consistent view
    assert set(rows) == {"a", "b"} and matrix[rows["b"]].tolist() == [0.0, 1.0]
    new_rows, new_matrix = vectors.table()
    assert all(new_matrix[new_rows[i]].tolist() == vectors[i].tolist() for i in "abc")


def test_ids_and_matrix_must_agree() -> None:
    with pytest.raises(ValueError, match=r"3 ids need a matrix \[3, D\]"):
        ItemVectors(["a", "b", "c"], np.eye(2))
