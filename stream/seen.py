"""A bounded membership set per user: exact while small, then two generations of Bloom filters.

``SeenSet`` answers ``value in seen`` for strings (item ids, event ids). It lives inside the user
state JSON, so it must stay small however long a user's history grows, and every replica and
every restart must read the same bits the same way.

Phases, sized by one ``SeenSetSettings`` (``exact_limit``, ``capacity``, ``fp_rate``):

    exact    up to ``exact_limit`` values kept verbatim, in insertion order. No false positives,
             no false negatives; JSON: a list of the values.
    bloom    the next value turns the set into Bloom filters holding every exact value. Values
             go into the newest *generation*; one that holds ``capacity`` values is closed and a
             new one started, and only the two newest are kept. JSON:
             ``{"g": [[hashes, count, base64 digits], ...]}``, newest first.

Guarantees in the bloom phase:

* **No false negatives for the last ``capacity`` new values**: a value that was not a member
  goes into the newest generation, and a generation is dropped only after two younger ones
  received ``capacity`` new values between them. Older values are forgotten: between
  ``capacity`` and ``2 * capacity`` new values are remembered, so the state stays bounded.
  Re-adding a member inserts nothing, so a re-sent history pushes nothing out (and a value
  ages from when it was first added).
* **False-positive rate at most ``fp_rate``** for a value never added: each generation is sized
  for ``fp_rate / 2`` at ``capacity`` values (``bits = -capacity * ln(fp_rate / 2) / ln(2)^2``,
  ``hashes = bits / capacity * ln 2``), and a probe of two full ones errs with probability
  ``1 - (1 - fp_rate / 2)^2 < fp_rate``. ``false_positive_rate()`` gives the design value for
  the current fill; ``tests/unit/stream/test_seen.py`` measures it.
* **Size**: two generations of ``bits / 6`` base64 digits. With 1 % at 2,000 values a
  generation is 3,680 digits (22,080 bits, 8 hashes); with 1e-6 at 2,000 it is 10,068 digits
  (60,408 bits, 21 hashes).

Bit layout: bit ``p`` of a generation is bit ``p % 6`` of the value of its base64 digit
``p // 6`` (standard alphabet; a multiple of 4 digits, so the text decodes as base64 without
padding). In memory the digits stay ASCII text in a ``bytearray``, and a probe maps the digit to
its value through a table, so reading the JSON and writing it back are plain copies. The worker
decodes and encodes a user's state for every event: the base64 codec (``a2b_base64``) took
~35 us per 10 KB and a translation of every byte ~13 us, more than the rest of ``apply_event``.

A generation keeps the hash count it was built with and its size is its length, so a change of
settings applies to new generations and never misreads an old one.

Hashing: the SHAKE128 (FIPS 202) digest of the UTF-8 value, read as little-endian 32-bit
words; probe ``i`` reads bit ``word[i] mod bits``. An extendable-output hash gives every probe
its own independent position, and one digest serves all generations (a shorter digest is a
prefix of a longer one). Double hashing (``h1 + i * h2``, Kirsch and Mitzenmacher) was tried
and measured 1e-5 to 2e-5 false positives where 1e-6 was designed: with ~20 probes in ~60,000 bits,
arithmetic progressions that share many positions dominate. Python's ``hash()`` is salted per
process and must not be used. The hash and byte layout are written here rather than taken from
a PyPI Bloom filter because these bytes outlive any library version in the changelogs: a
library that changed either would silently turn every stored filter into noise.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Container
from dataclasses import dataclass, field
from hashlib import shake_128
from typing import Any

from streamrec.stream.config import SeenSetSettings

Hashed = tuple[int, ...]  # 32-bit words, one per probe
_LN2 = math.log(2.0)
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_VALUE = bytes.maketrans(_ALPHABET, bytes(range(64)))  # ASCII digit -> its 6-bit value
_EMPTY = _ALPHABET[0]  # the digit of value 0


def _hashed(value: str, words: int) -> Hashed:
    return struct.unpack(f"<{words}I", shake_128(value.encode("utf-8")).digest(4 * words))


@dataclass
class BloomFilter:
    """One generation: ``digits`` (base64 ASCII, 6 bits each; bit ``p`` is
    ``value(digits[p // 6]) >> (p % 6) & 1``) probed at ``hashes`` positions; ``count`` values
    were inserted into it."""

    digits: bytearray
    hashes: int
    count: int = 0

    @classmethod
    def sized(cls, capacity: int, fp_rate: float) -> BloomFilter:
        """The smallest empty filter whose design rate at ``capacity`` values is at most
        ``fp_rate``: the textbook size, grown by 4 digits while a whole number of hashes
        misses."""
        nbits = math.ceil(-capacity * math.log(fp_rate) / _LN2**2)
        ndigits = -(-nbits // 24) * 4  # whole base64 quads: 24 bits each
        while True:
            best = min(
                (cls(_empty(ndigits), k, capacity) for k in _hash_counts(ndigits, capacity)),
                key=BloomFilter.false_positive_rate,
            )
            if best.false_positive_rate() <= fp_rate:
                return cls(best.digits, best.hashes)
            ndigits += 4

    @property
    def nbits(self) -> int:
        """Size in bits (6 per digit)."""
        return len(self.digits) * 6

    def probe(self, hashed: Hashed) -> bool:
        """True when every bit of ``hashed`` is set: added, or a false positive."""
        digits, nbits = self.digits, self.nbits
        for word in hashed[: self.hashes]:  # a loop, not all(): most absent values stop early
            p = word % nbits
            if not _VALUE[digits[p // 6]] >> (p % 6) & 1:
                return False
        return True

    def insert(self, hashed: Hashed) -> None:
        """Set the bits of ``hashed`` and count it (callers insert only values it lacks)."""
        digits, nbits = self.digits, self.nbits
        for word in hashed[: self.hashes]:
            p = word % nbits
            digits[p // 6] = _ALPHABET[_VALUE[digits[p // 6]] | 1 << (p % 6)]
        self.count += 1

    def false_positive_rate(self) -> float:
        """Design rate at the current fill: ``(1 - exp(-hashes * count / bits)) ** hashes``."""
        return float((1.0 - math.exp(-self.hashes * self.count / self.nbits)) ** self.hashes)

    def to_json(self) -> list[Any]:
        """``[hashes, count, base64 digits]``."""
        return [self.hashes, self.count, self.digits.decode("ascii")]

    @classmethod
    def from_json(cls, obj: list[Any]) -> BloomFilter:
        """Inverse of ``to_json``."""
        hashes, count, text = obj
        return cls(bytearray(text, "ascii"), int(hashes), int(count))


@dataclass
class SeenSet:
    """Bounded set of strings (module docstring): ``value in s`` and ``s.add(value, sizing)``."""

    exact: dict[str, None] = field(default_factory=dict)  # insertion-ordered; empty once bloom
    generations: list[BloomFilter] = field(default_factory=list)  # newest first

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, str):
            return False
        if not self.generations:
            return value in self.exact
        hashed = _hashed(value, max(g.hashes for g in self.generations))
        return any(g.probe(hashed) for g in self.generations)

    def probe(self) -> Container[str]:
        """What to test membership with in a hot loop: while the set is exact, its dict (``in``
        at C speed: fusion tests a few hundred candidates per slate), else the set itself."""
        return self.exact if not self.generations else self

    def add(self, value: str, sizing: SeenSetSettings) -> bool:
        """Remember ``value``; True when it was not a member before. A member, or a false
        positive, is not inserted again: a re-sent history leaves the set as it is."""
        if not self.generations:
            if value in self.exact:
                return False
            if len(self.exact) < sizing.exact_limit:
                self.exact[value] = None
                return True
            self._to_bloom(sizing)
        # Enough words for the generations kept and for a new one, should this add start it.
        words = max([g.hashes for g in self.generations] + [_shape(sizing)[1]])
        hashed = _hashed(value, words)
        if any(g.probe(hashed) for g in self.generations):
            return False
        self._room(sizing).insert(hashed)
        return True

    def copy(self) -> SeenSet:
        """An independent copy: adding to it leaves this set as it is."""
        return SeenSet(
            dict(self.exact),
            [BloomFilter(bytearray(g.digits), g.hashes, g.count) for g in self.generations],
        )

    def false_positive_rate(self) -> float:
        """Design probability that a value never added reads as a member now (0.0 while
        exact): ``1 - prod(1 - rate of each generation)``."""
        miss = 1.0
        for g in self.generations:
            miss *= 1.0 - g.false_positive_rate()
        return 1.0 - miss

    def to_json(self) -> list[str] | dict[str, Any]:
        """Exact: the list of values; bloom: ``{"g": [[hashes, count, base64], ...]}``."""
        if not self.generations:
            return list(self.exact)
        return {"g": [g.to_json() for g in self.generations]}

    @classmethod
    def from_json(cls, obj: list[str] | dict[str, Any] | None) -> SeenSet:
        """Inverse of ``to_json``; None (a field older states lack) is the empty set."""
        if obj is None:
            return cls()
        if isinstance(obj, list):
            return cls(exact=dict.fromkeys(obj))
        return cls(generations=[BloomFilter.from_json(g) for g in obj["g"]])

    def _to_bloom(self, sizing: SeenSetSettings) -> None:
        first = _generation(sizing)
        for value in self.exact:
            first.insert(_hashed(value, first.hashes))
        self.exact = {}
        self.generations = [first]

    def _room(self, sizing: SeenSetSettings) -> BloomFilter:
        """The newest generation, after starting a new one (dropping the oldest) when full."""
        if self.generations[0].count >= sizing.capacity:
            self.generations = [_generation(sizing), self.generations[0]]
        return self.generations[0]


def _hash_counts(ndigits: int, capacity: int) -> tuple[int, int]:
    """The whole numbers of hashes either side of the optimum ``bits / capacity * ln 2``."""
    best = ndigits * 6 / capacity * _LN2
    return max(1, math.floor(best)), max(1, math.ceil(best))


@functools.cache
def _sized_shape(capacity: int, fp_rate: float) -> tuple[int, int]:
    """(digits, hashes) of ``BloomFilter.sized``; cached: searched once per setting, not per
    add."""
    bloom = BloomFilter.sized(capacity, fp_rate)
    return len(bloom.digits), bloom.hashes


def _shape(sizing: SeenSetSettings) -> tuple[int, int]:
    # Half the rate per generation: a probe of two full generations errs at most fp_rate.
    return _sized_shape(sizing.capacity, sizing.fp_rate / 2)


def _generation(sizing: SeenSetSettings) -> BloomFilter:
    ndigits, hashes = _shape(sizing)
    return BloomFilter(_empty(ndigits), hashes)


def _empty(ndigits: int) -> bytearray:
    return bytearray([_EMPTY]) * ndigits
