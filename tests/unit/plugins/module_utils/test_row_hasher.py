"""engines/base.py RowHasher: the order-independent content hash of a table's rows."""
import random

from ansible_collections.dbsafe.django.plugins.module_utils.engines.base import RowHasher

ROWS = [(1, "a", None), (2, "b", b"\x00"), (3, "", 2.5), (3, "", 2.5), (4, "\udcff", -1)]


def digest(rows):
    hasher = RowHasher()
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


def test_each_value_keeps_its_type():
    values = [1, 1.0, "1", b"1", None, "", b"", 0, 0.0, -0.0, "None", 2 ** 63 - 1, 2.0 ** 63]
    digests = set(digest([(value,)])[1] for value in values)
    assert len(digests) == len(values)


def test_values_do_not_run_into_each_other():
    assert digest([("ab", "c")]) != digest([("a", "bc")])
    assert digest([(1, 23)]) != digest([(12, 3)])
    assert digest([("a", None)]) != digest([("a",)])


def test_empty_table():
    assert digest([]) == (0, RowHasher().hexdigest())
