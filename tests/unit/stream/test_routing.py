"""The partition an event belongs on is the one Java clients and aiokafka choose."""

from __future__ import annotations

import unicodedata

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streamrec.errors import ContractError
from streamrec.stream.routing import check_key, home_partition

# Apache Kafka's own expected murmur2 values (clients' UtilsTest), signed as Java gives them.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 3, 4, 12, 64])
def test_home_partition_is_javas_default_partitioner(partitions: int) -> None:
    for key, hashed in JAVA_MURMUR2.items():
        # Java: Utils.toPositive(murmur2(key)) % numPartitions
        assert home_partition(key, partitions) == (hashed & 0x7FFFFFFF) % partitions, key


def test_home_partition_is_aiokafkas_default_partitioner() -> None:
    choose = DefaultPartitioner()
    keys = [f"user-{n}".encode() for n in range(500)] + ["é€😀".encode()]
    for partitions in (2, 4, 7):
        everything = list(range(partitions))
        assert [home_partition(k, partitions) for k in keys] == [
            choose(k, everything, everything) for k in keys
        ]


def test_a_wrong_key_is_shown_as_text_and_a_unicode_form_mismatch_is_named() -> None:
    nfc, nfd = "Zo\u00eb M\u00fcller", "Zoe\u0308 Mu\u0308ller"  # print alike
    with pytest.raises(ContractError) as raised:
        check_key(nfc.encode(), nfd, "record", "why")
    said = str(raised.value)
    assert f"key {nfc!r} differs" in said and "normalization form" in said
    with pytest.raises(ContractError) as raised:
        check_key(b"u2", "u1", "record", "why")
    assert "key 'u2' differs from its id ('u1'); why" in str(raised.value)
    with pytest.raises(ContractError) as raised:
        check_key(b"\xff" * 100, "u1", "record", "why")  # not UTF-8, and long
    assert "key b'\\xff" in str(raised.value) and "(100 bytes)" in str(raised.value)


def test_a_key_longer_than_any_id_is_not_normalized() -> None:
    # Normalizing a hostile run of combining marks takes time quadratic in its length (seconds
    # for 80 KB on the event loop), and no id is that long.
    nfc = "\u00e9" * 200  # 400 bytes
    with pytest.raises(ContractError) as raised:
        check_key(unicodedata.normalize("NFD", nfc).encode(), nfc, "record", "why")  # 600 bytes
    assert "normalization form" not in str(raised.value)
    with pytest.raises(ContractError) as raised:
        check_key(unicodedata.normalize("NFD", nfc[:50]).encode(), nfc[:50], "record", "why")
    assert "normalization form" in str(raised.value)
