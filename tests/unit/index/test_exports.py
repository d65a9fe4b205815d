"""The public API of streamrec.index: every name in __all__ resolves, and importing is cheap."""

from __future__ import annotations

import subprocess
import sys

import streamrec.index


def test_every_exported_name_resolves() -> None:
    for name in streamrec.index.__all__:
        assert getattr(streamrec.index, name).__name__ == name


def test_importing_index_settings_does_not_import_faiss() -> None:
    code = "import sys, streamrec.index.config; print('faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
