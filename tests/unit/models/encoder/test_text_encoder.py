"""all-MiniLM-L6-v2 through transformers from the packaged folder, and the vector cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamrec.models.encoder import text as text_encoder
from streamrec.models.encoder.text import TEXT_DIM, cached_text_vectors, minilm_dir


def test_model_folder_is_found() -> None:
    assert (minilm_dir() / "model.safetensors").is_file()


@pytest.mark.slow
def test_vectors_are_normalised_sensible_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [
        "Toy Story (1995). Genres: Animation, Children's, Comedy",
        "A Goofy Movie (1995). Genres: Animation, Children's, Comedy",
        "Schindler's List (1993). Genres: Drama, War",
    ]
    vecs = cached_text_vectors(texts, tmp_path)
    assert vecs.shape == (3, TEXT_DIM) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]  # cartoons closer to each other

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("cache miss: the model was loaded again")

    monkeypatch.setattr(text_encoder, "TextEncoder", no_model)
    np.testing.assert_array_equal(cached_text_vectors(texts, tmp_path), vecs)


@pytest.mark.slow
def test_loading_the_model_draws_no_progress_bar(capfd: pytest.CaptureFixture[str]) -> None:
    text_encoder.TextEncoder()
    assert "Loading weights" not in capfd.readouterr().err
