"""The MySQL restore's swap, as SQL text: side database names, the leftovers a killed restore
leaves, the one RENAME TABLE statement and the scripts around it (no server needed; the real
swap runs in tests/reliability/test_r6_restores.py)."""
import pytest

from ansible_collections.dbsafe.django.plugins.module_utils.engines.mysql_snapshot import (
    SWAP_DELIMITER,
    definition_from_output,
    leftover_side_databases,
    objects_from_output,
    rename_sql,
    side_database_name,
    swap_scripts,
    unescape_batch,
    view_order,
)


def empty_objects(**kinds):
    objects = dict((kind, []) for kind in ("TABLE", "VIEW", "TRIGGER", "PROCEDURE", "FUNCTION",
                                           "EVENT"))
    objects.update(kinds)
    return objects


def test_side_names_start_with_the_database_and_fit_in_64_characters():
    assert side_database_name("shop", "restore", "0a1b2c3d") == "shop__dbsafe_restore_0a1b2c3d"
    assert side_database_name("shop", "old", "0a1b2c3d") == "shop__dbsafe_old_0a1b2c3d"
    long_name = "x" * 64
    name = side_database_name(long_name, "restore", "0a1b2c3d")
    assert len(name) == 64 and name.startswith("x" * 30) and name.endswith("_0a1b2c3d")
    with pytest.raises(ValueError):
        side_database_name("shop", "other", "0a1b2c3d")
    with pytest.raises(ValueError):
        side_database_name("shop", "restore", "'; DROP")


def test_only_this_databases_side_databases_count_as_leftovers():
    names = ["shop", "shop__dbsafe_restore_0a1b2c3d", "shop__dbsafe_old_0a1b2c3d",
             "shop2__dbsafe_restore_0a1b2c3d", "shop__dbsafe_restore_0a1b2c3d_mine",
             "shop__dbsafe_restore_XYZ", "shopping"]
    assert leftover_side_databases("shop", names) == ["shop__dbsafe_old_0a1b2c3d",
                                                      "shop__dbsafe_restore_0a1b2c3d"]


def test_one_rename_statement_moves_every_table_both_ways():
    sql = rename_sql("shop", "scratch", "old", ["a", "b`c"], ["a", "new"])
    assert sql.count("RENAME TABLE") == 1
    assert sql == ("RENAME TABLE `shop`.`a` TO `old`.`a`, `shop`.`b``c` TO `old`.`b``c`, "
                   "`scratch`.`a` TO `shop`.`a`, `scratch`.`new` TO `shop`.`new`;\n")
    # Old tables leave before new ones of the same name arrive: pairs run in their order.
    assert sql.index("`shop`.`a` TO `old`") < sql.index("`scratch`.`a` TO `shop`")
    assert rename_sql("shop", "scratch", "old", [], []) == ""


def test_a_database_of_tables_only_is_swapped_by_one_statement_and_nothing_after():
    before, after = swap_scripts("shop", "scratch", "old", empty_objects(TABLE=["a"]),
                                 empty_objects(TABLE=["a"]), {}, lock_wait=120)
    assert before.splitlines() == [
        "SET SESSION lock_wait_timeout = 120;",
        "RENAME TABLE `shop`.`a` TO `old`.`a`, `scratch`.`a` TO `shop`.`a`;"]
    assert after == ""
    before, _after = swap_scripts("shop", "scratch", "old", empty_objects(TABLE=["a"]),
                                  empty_objects(TABLE=["a"]), {})
    assert "lock_wait_timeout" not in before


def test_triggers_go_before_the_rename_and_come_back_after_it_with_their_sql_mode():
    definitions = {
        ("TRIGGER", "t_new"): ("CREATE TRIGGER t_new BEFORE INSERT ON a FOR EACH ROW BEGIN "
                               "SET NEW.x = 1; END", "STRICT_TRANS_TABLES"),
        ("VIEW", "v"): ("CREATE ALGORITHM=UNDEFINED VIEW `v` AS select `a`.`x` AS `x` from `a`",
                        None),
        ("PROCEDURE", "p"): ("CREATE PROCEDURE `p`() BEGIN SELECT 1; END", ""),
    }
    target = empty_objects(TABLE=["a"], TRIGGER=["t_old"], VIEW=["gone"], FUNCTION=["f"])
    scratch = empty_objects(TABLE=["a"], TRIGGER=["t_new"], VIEW=["v"], PROCEDURE=["p"])
    before, after = swap_scripts("shop", "scratch", "old", target, scratch, definitions)
    assert before.index("DROP TRIGGER IF EXISTS `shop`.`t_old`") < before.index("RENAME TABLE")
    assert before.index("DROP TRIGGER IF EXISTS `scratch`.`t_new`") < before.index("RENAME TABLE")
    assert after.startswith("DELIMITER %s\n" % SWAP_DELIMITER)
    assert "DROP FUNCTION IF EXISTS `f`" + SWAP_DELIMITER in after
    assert "DROP VIEW IF EXISTS `gone`" + SWAP_DELIMITER in after
    assert "CREATE OR REPLACE ALGORITHM=UNDEFINED VIEW `v`" in after
    trigger = after.index("CREATE TRIGGER t_new")
    assert after.rindex("SET SESSION sql_mode", 0, trigger) > after.index("CREATE OR REPLACE")
    assert "SET NEW.x = 1; END" + SWAP_DELIMITER in after  # its inner ';' stays its own
    assert "CREATE PROCEDURE `p`() BEGIN SELECT 1; END" + SWAP_DELIMITER in after


def test_views_are_created_after_the_views_they_select_from():
    definitions = {
        "a_top": "CREATE VIEW `a_top` AS select `m`.`x` AS `x` from `m_middle` `m`",
        "m_middle": "CREATE VIEW `m_middle` AS select `x` from `z_base`",
        "z_base": "CREATE VIEW `z_base` AS select 1 AS `x`",
    }
    assert view_order(definitions) == ["z_base", "m_middle", "a_top"]
    # A view's own name in its CREATE part is no dependency.
    assert view_order({"v": "CREATE VIEW `v` AS select 1 AS `v`"}) == ["v"]


def test_batch_output_fields_are_unescaped():
    assert unescape_batch(r"a\nb\tc\\d\0") == "a\nb\tc\\d\0"
    line = "trg\tSTRICT_TRANS_TABLES\tCREATE TRIGGER trg BEFORE INSERT ON a FOR EACH ROW\\nBEGIN" \
           "\\n  SET NEW.x = 'a\\\\b';\\nEND\tutf8mb3\tutf8mb3_general_ci\tutf8mb4_general_ci\t2026"
    statement, mode = definition_from_output("TRIGGER", line)
    assert mode == "STRICT_TRANS_TABLES"
    assert statement == "CREATE TRIGGER trg BEFORE INSERT ON a FOR EACH ROW\nBEGIN\n  SET NEW.x = 'a\\b';\nEND"
    statement, mode = definition_from_output("VIEW", "v\tCREATE VIEW `v` AS select 1\tutf8mb3\tx")
    assert (statement, mode) == ("CREATE VIEW `v` AS select 1", None)


def test_objects_are_read_by_kind_with_sequences_as_tables():
    out = ('{"kind": "TABLE", "name": "b"}\n{"kind": "TABLE", "name": "a"}\n'
           '{"kind": "VIEW", "name": "v"}\n{"kind": "PROCEDURE", "name": "p"}\n\n')
    objects = objects_from_output(out)
    assert objects["TABLE"] == ["a", "b"] and objects["VIEW"] == ["v"]
    assert objects["PROCEDURE"] == ["p"] and objects["TRIGGER"] == [] and objects["EVENT"] == []
