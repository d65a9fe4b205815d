"""Readers of the dataset file layouts ``load_dataset`` accepts (streamrec/datasets.py lists
them): MovieLens-100K raw files, MovieLens ``.dat`` and ``.csv``, and RecBole atomic files.
Each reader names the file and line of anything malformed (``DataError``).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from pathlib import Path

from streamrec.datasets import Dataset, Interaction, Item
from streamrec.errors import DataError

# Epoch seconds beyond the year 5000: epoch milliseconds of any date after 1973, the usual
# mistake in an exported log.
LATEST_SECONDS = 10**11
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
    if not math.isfinite(rating_v):
        raise DataError(f"{path}:{lineno}: rating {rating!r} is not a finite number")
    try:
        ts_v = int(float(ts))
    except (ValueError, OverflowError):
        raise DataError(
            f"{path}:{lineno}: timestamp {ts!r} is not a finite number; expected epoch seconds"
        ) from None
    if ts_v > LATEST_SECONDS:
        raise DataError(
            f"{path}:{lineno}: timestamp {ts} is after the year 5000 in epoch seconds; "
            "expected epoch seconds (milliseconds? divide by 1000)"
        )
    return Interaction(user, item, rating_v, ts_v)


def _split_title(raw: str) -> tuple[str, int | None]:
    """``"Toy Story (1995)"`` -> ("Toy Story", 1995); a title without a year keeps it None."""
    m = _TITLE_YEAR.match(raw.strip())
    if m:
        return m.group("title"), int(m.group("year"))
    return raw.strip(), None


# --- MovieLens-100K raw (u.data / u.item)


def load_ml100k_raw(inter: Path, name: str) -> Dataset:
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


def load_ml_dat(inter: Path, name: str) -> Dataset:
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


def load_ml_csv(inter: Path, name: str) -> Dataset:
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


def load_recbole(inter: Path, name: str) -> Dataset:
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
            item = _atomic_item(row)  # ids stripped as the interactions' are, so they match
            items[item.item_id] = item
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
    return Item(row["item_id"].strip(), title.strip(), genre_t, year)
