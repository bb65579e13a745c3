"""engines/base.py RowHasher (rows in any order) and KeyOrderedRowHasher (rows in key order)."""
import random

import pytest

from ansible_collections.dbsafe.django.plugins.module_utils.engines.base import (
    KeyOrderedRowHasher,
    RowHasher,
)

ROWS = [(1, "a", None), (2, "b", b"\x00"), (3, "", 2.5), (3, "", 2.5), (4, "\udcff", -1)]


def digest(rows, kind=RowHasher):
    hasher = kind()
    hasher.add_rows(rows)
    return hasher.rows, hasher.hexdigest()


def test_row_order_does_not_matter():
    shuffled = list(ROWS)
    random.Random(8).shuffle(shuffled)
    assert shuffled != ROWS
    assert digest(shuffled) == digest(ROWS) == digest(reversed(ROWS))


def test_the_rows_are_counted_across_chunks():
    rows = [(n, "row %d" % n) for n in range(RowHasher.CHUNK * 2 + 7)]
    count, value = digest(iter(rows))
    assert count == len(rows)
    assert (count, value) == digest(list(reversed(rows)))
    assert digest(rows[:-1])[1] != value


def test_add_is_add_rows_of_one_row():
    one_by_one = RowHasher()
    for row in ROWS:
        one_by_one.add(list(row))
    assert (one_by_one.rows, one_by_one.hexdigest()) == digest(ROWS)


def test_equal_rows_do_not_cancel_and_count():
    twice = digest([(1, "x"), (1, "x")])
    assert twice != digest([]) and twice != digest([(1, "x")])
    assert twice[0] == 2


@pytest.mark.parametrize("kind", [RowHasher, KeyOrderedRowHasher])
def test_each_value_keeps_its_type(kind):
    values = [1, 1.0, "1", b"1", None, "", b"", 0, 0.0, -0.0, "None", 2 ** 63 - 1, 2.0 ** 63]
    digests = set(digest([(value,)], kind)[1] for value in values)
    assert len(digests) == len(values)


@pytest.mark.parametrize("kind", [RowHasher, KeyOrderedRowHasher])
def test_values_and_rows_do_not_run_into_each_other(kind):
    assert digest([("ab", "c")], kind) != digest([("a", "bc")], kind)
    assert digest([(1, 23)], kind) != digest([(12, 3)], kind)
    assert digest([("a", None)], kind) != digest([("a",)], kind)
    assert digest([(1, 2), (3,)], kind) != digest([(1,), (2, 3)], kind)


@pytest.mark.parametrize("kind", [RowHasher, KeyOrderedRowHasher])
def test_empty_table(kind):
    assert digest([], kind) == (0, kind().hexdigest())


def test_key_ordered_rows_are_one_stream_in_their_order():
    rows = [(n, "row %d" % n) for n in range(RowHasher.CHUNK + 3)]
    count, value = digest(iter(rows), KeyOrderedRowHasher)
    assert count == len(rows)
    assert (count, value) == digest(list(rows), KeyOrderedRowHasher)
    # Its caller orders the rows by a unique key; another order is other content to it.
    assert digest(list(reversed(rows)), KeyOrderedRowHasher)[1] != value
    assert digest(rows[:-1], KeyOrderedRowHasher)[1] != value
    assert value != digest(rows)[1]  # never equal to the unordered hash of the same rows
