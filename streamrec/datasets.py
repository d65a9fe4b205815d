"""Logged interaction histories: MovieLens in its three public layouts and RecBole atomic files.

Every rating is one implicit interaction. Interactions are ordered by timestamp with a *stable*
sort, so ties keep file order: in ML-100K 415 of 943 users share their latest timestamp between
several items, and this rule decides which one is the leave-one-out test item.

Supported inputs (``load_dataset(path)``; a folder or one of its files):

==========================  =====================================  ===========================
layout                      interactions                           items (optional)
==========================  =====================================  ===========================
MovieLens-100K              ``u.data`` (tab: user item rating ts)  ``u.item`` (``|``, latin-1)
MovieLens-1M / 10M          ``ratings.dat`` (``::``)               ``movies.dat`` (``::``)
MovieLens latest / 20M      ``ratings.csv`` (header)               ``movies.csv`` (header)
RecBole atomic files        ``<name>.inter`` (``field:type``)      ``<name>.item``
==========================  =====================================  ===========================

``load_dataset(None)`` fetches MovieLens-100K as RecBole ships it inside its PyPI wheel
(``recbole==1.2.1``; only the data files are extracted, no RecBole code is imported).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from streamrec.errors import DataError
from streamrec.models.encoder.item_text import item_text

__all__ = [
    "Dataset",
    "Interaction",
    "Item",
    "ensure_movielens_100k",
    "load_dataset",
]

RECBOLE_WHEEL = "recbole==1.2.1"
_WHEEL_PREFIX = "recbole/dataset_example/ml-100k/"
ML100K_FILES = ("ml-100k.inter", "ml-100k.item")


@dataclass(frozen=True, slots=True)
class Interaction:
    """One user-item event; ``ts`` in epoch seconds, ``rating`` as logged (1.0 when absent)."""

    user_id: str
    item_id: str
    rating: float
    ts: int


@dataclass(frozen=True, slots=True)
class Item:
    """Catalog entry; ``text`` is what the item text encoder reads."""

    item_id: str
    title: str
    genres: tuple[str, ...]
    year: int | None

    @property
    def text(self) -> str:
        """What the item text encoder reads (``models/encoder/item_text.py``)."""
        return item_text(self.display_title, self.genres)

    @property
    def display_title(self) -> str:
        """The title with its year, e.g. ``"Toy Story (1995)"``; ``"item <id>"`` when untitled."""
        title = self.title or f"item {self.item_id}"
        return f"{title} ({self.year})" if self.year is not None else title


@dataclass(frozen=True)
class Dataset:
    """Interactions in stable time order and the items they refer to (keyed by ``item_id``).

    Every item that occurs in an interaction is in ``items``; items without a catalog record get
    an empty title (their text is then ``"item <id>"``).
    """

    name: str
    interactions: list[Interaction]
    items: dict[str, Item]

    def sequences(self) -> dict[str, list[Interaction]]:
        """Per user, that user's interactions in time order (ties keep file order).

        Users appear in order of their first interaction.
        """
        out: dict[str, list[Interaction]] = {}
        for it in self.interactions:
            out.setdefault(it.user_id, []).append(it)
        return out


# --------------------------------------------------------------------------- fetching ML-100K


def ensure_movielens_100k(cache_dir: Path) -> Path:
    """Folder ``cache_dir/datasets/ml-100k`` holding RecBole's ML-100K atomic files.

    Downloads the ``recbole==1.2.1`` wheel with pip (no dependencies, nothing installed) on the
    first call and extracts only ``recbole/dataset_example/ml-100k/*``. Idempotent; the folder
    appears atomically (extracted into a temporary sibling, then renamed), so a crash or a
    concurrent caller never leaves a half-written copy.
    """
    target = Path(cache_dir) / "datasets" / "ml-100k"
    if all((target / f).is_file() for f in ML100K_FILES):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".ml-100k-") as tmp:
        wheel = _download_wheel(Path(tmp) / "wheel")
        staged = Path(tmp) / "ml-100k"
        staged.mkdir()
        _extract_prefix(wheel, _WHEEL_PREFIX, staged)
        missing = [f for f in ML100K_FILES if not (staged / f).is_file()]
        if missing:
            raise DataError(
                f"{wheel.name} lacks {_WHEEL_PREFIX}{missing[0]}; the wheel layout changed. "
                f"Put ml-100k.inter and ml-100k.item into {target} by hand."
            )
        if target.exists():  # a stale partial folder from an older layout, or a concurrent win
            if all((target / f).is_file() for f in ML100K_FILES):
                return target
            shutil.rmtree(target)
        try:
            os.rename(staged, target)
        except OSError:
            if not all((target / f).is_file() for f in ML100K_FILES):
                raise
    return target


def _download_wheel(dest: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        RECBOLE_WHEEL,
        "-d",
        str(dest),
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("recbole-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DataError(
            f"could not download {RECBOLE_WHEEL} from PyPI to get MovieLens-100K "
            f"(pip exit {proc.returncode}: {' | '.join(tail)}). Check network access to PyPI, "
            "or pass --dataset with a local MovieLens folder."
        )
    return wheels[0]


def _extract_prefix(wheel: Path, prefix: str, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            name = info.filename
            if not name.startswith(prefix) or info.is_dir():
                continue
            leaf = name[len(prefix) :]
            if "/" in leaf or leaf in ("", ".", ".."):  # flat folder only; no path tricks
                continue
            with zf.open(info) as src, open(dest / leaf, "wb") as out:
                shutil.copyfileobj(src, out)


# --------------------------------------------------------------------------- loading


def load_dataset(path: Path | None = None, cache_dir: Path | None = None) -> Dataset:
    """Load a dataset; ``None`` means MovieLens-100K (fetched into ``cache_dir`` once).

    ``path`` may be a folder or one interaction file of a supported layout (see module doc).
    Raises ``DataError`` naming file and line when a file is missing or malformed.
    """
    from streamrec.dataset_files import load_ml100k_raw, load_ml_csv, load_ml_dat, load_recbole

    if path is None:
        from streamrec.settings import default_cache_dir

        folder = ensure_movielens_100k(cache_dir or default_cache_dir())
        return load_recbole(folder / "ml-100k.inter", "ml-100k")
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset path {path} does not exist; pass a folder or interaction file")
    inter = _find_interactions(path) if path.is_dir() else path
    name = path.name if path.is_dir() else path.parent.name or inter.stem
    if inter.name == "u.data":
        return load_ml100k_raw(inter, name)
    if inter.name == "ratings.dat":
        return load_ml_dat(inter, name)
    if inter.name == "ratings.csv":
        return load_ml_csv(inter, name)
    if inter.suffix == ".inter":
        return load_recbole(inter, inter.stem)
    raise DataError(
        f"{inter}: unknown dataset file; expected u.data, ratings.dat, ratings.csv or *.inter"
    )


def _find_interactions(folder: Path) -> Path:
    for candidate in ("u.data", "ratings.dat", "ratings.csv"):
        if (folder / candidate).is_file():
            return folder / candidate
    inters = sorted(folder.glob("*.inter"))
    if len(inters) == 1:
        return inters[0]
    if len(inters) > 1:
        raise DataError(
            f"{folder} holds several .inter files ({', '.join(p.name for p in inters)}); "
            "pass the one to load"
        )
    raise DataError(
        f"{folder} holds no interaction file; expected u.data, ratings.dat, ratings.csv or *.inter"
    )
