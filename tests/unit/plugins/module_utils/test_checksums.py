"""introspect.py's checksum of what a migration does: the pure normalisation (SQL, Python
source, Django's deconstructed operations) and what changes the checksum and what does not."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
from django.conf import settings
from django.db import migrations, models

from ansible_collections.dbsafe.django.plugins.module_utils import introspect

if not settings.configured:  # a constraint's deconstruct compares translated messages
    settings.configure(USE_I18N=False)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def checksum(*operations, module="shop.migrations.0002_x"):
    migration = type("Migration", (migrations.Migration,), {"__module__": module, "operations": list(operations)})
    return introspect.migration_checksum(migration("0002_x", "shop"))


# -- SQL ------------------------------------------------------------------------------------------

def test_sql_without_comments_spacing_and_trailing_semicolon():
    assert introspect.sql_text("""
        -- books without a page count
        UPDATE books_book
           SET pages = 0   /* none yet */
         WHERE pages IS NULL ;
    """) == "UPDATE books_book SET pages = 0 WHERE pages IS NULL"
    assert introspect.sql_text("INSERT INTO t (a, b) VALUES ( 1 ,2 )") == introspect.sql_text("INSERT INTO t(a,b) VALUES(1, 2)")


def test_sql_quoted_text_is_kept_as_it_is():
    assert introspect.sql_text("SELECT 'a  -- b'") == "SELECT 'a  -- b'"
    assert introspect.sql_text("SELECT 'it''s  x' ,  \"Col  Name\"") == "SELECT 'it''s  x',\"Col  Name\""
    assert introspect.sql_text("SELECT 'a\\'  b'") == "SELECT 'a\\'  b'"
    assert introspect.sql_text("SELECT 'a  b'") != introspect.sql_text("SELECT 'a b'")


def test_sql_a_changed_statement_differs():
    assert introspect.sql_text("UPDATE t SET a = 1") != introspect.sql_text("UPDATE t SET a = 2")
    assert introspect.sql_text("SELECT a - -1") != introspect.sql_text("SELECT a --1")


def test_sql_shape_of_lists_and_params():
    assert introspect.sql_shape(["SELECT  1;", ("UPDATE t SET a = %s", [1])]) == [
        "SELECT 1", ["UPDATE t SET a = %s", [1]]]
    assert introspect.sql_shape("") == ""


# -- Python source --------------------------------------------------------------------------------

FUNCTION = '''
def forwards(apps, schema_editor):
    Book = apps.get_model("books", "Book")
    Book.objects.filter(pages__isnull=True).update(pages=0)
'''

FUNCTION_REFORMATTED = '''
    def forwards(apps, schema_editor):
        """Books without pages get 0."""
        # the historical model
        Book = apps.get_model('books',
                              'Book')
        Book.objects.filter(
            pages__isnull=True,
        ).update(pages=0)  # done
'''


def test_code_without_comments_docstrings_and_formatting():
    assert introspect.code_shape(FUNCTION) == introspect.code_shape(FUNCTION_REFORMATTED)


def test_code_a_changed_body_differs():
    assert introspect.code_shape(FUNCTION) != introspect.code_shape(FUNCTION.replace("pages=0", "pages=1"))
    assert introspect.code_shape(FUNCTION) != introspect.code_shape(FUNCTION.replace("isnull=True", "isnull=False"))


def test_code_that_does_not_parse_is_its_text_with_spacing_normalised():
    assert introspect.code_shape("RunPython(lambda a,  b:\n") == {"text": "RunPython(lambda a, b:"}


SOURCE_WITH_SUBSCRIPTS = '''
def forwards(apps, schema_editor):
    """Docstring."""
    rows = [r for r in range(10)][1:3]
    table = {"a": rows[0], "b": rows[-1]}[f"{rows[0]!r:>4}"[:1]]
    matrix = None
    print(table, matrix and matrix[1:2, 3], ..., b"x")
    return lambda x, *a, y=1, **k: x[a]
'''


@pytest.mark.parametrize("venv", [".venv-django32", ".venv-django42", ".venv-django61"])
def test_code_shape_is_the_same_on_every_python(venv):
    """Python 3.8 wraps subscripts in Index nodes, 3.12 adds type_params, 3.13 dumps without
    empty fields: the shape is the same on each (a Python upgrade is no edit)."""
    python = os.path.join(ROOT, venv, "bin", "python")
    if not os.path.exists(python):
        pytest.skip("no %s" % venv)
    program = ("import json, sys; sys.path.insert(0, %r); import introspect; "
               "print(json.dumps(introspect.code_shape(sys.stdin.read()), sort_keys=True))"
               % os.path.dirname(introspect.__file__))
    there = subprocess.run([python, "-c", program], input=SOURCE_WITH_SUBSCRIPTS, capture_output=True,
                           text=True, check=True).stdout
    assert json.loads(there) == json.loads(json.dumps(introspect.code_shape(SOURCE_WITH_SUBSCRIPTS)))


# -- operations -----------------------------------------------------------------------------------

def test_positional_or_keyword_arguments_are_the_same():
    assert checksum(migrations.AddField("book", "rating", models.IntegerField(null=True))) == \
        checksum(migrations.AddField(model_name="book", name="rating", field=models.IntegerField(null=True)))


def test_a_changed_argument_differs():
    base = checksum(migrations.AddField("book", "rating", models.IntegerField(null=True)))
    assert base != checksum(migrations.AddField("book", "rating", models.IntegerField(null=True, default=1)))
    assert base != checksum(migrations.AddField("book", "rating", models.BigIntegerField(null=True)))
    assert base != checksum(migrations.AddField("book", "ratings", models.IntegerField(null=True)))
    assert base != checksum(migrations.AddField("book", "rating", models.IntegerField(null=True)),
                            migrations.RunSQL("SELECT 1"))


def test_runsql_formatting_does_not_count_and_its_statement_does():
    base = checksum(migrations.RunSQL("UPDATE t SET a = 1", migrations.RunSQL.noop))
    assert base == checksum(migrations.RunSQL(sql="-- set a\nUPDATE t\n   SET a = 1;\n", reverse_sql=""))
    assert base != checksum(migrations.RunSQL("UPDATE t SET a = 2", migrations.RunSQL.noop))


def test_q_and_renamed_keywords_are_the_same_across_django_releases():
    # Django 3.2 deconstructs Q(a=1) into kwargs, later releases into args; 5.1 renamed check.
    assert introspect.canonical(models.Q(pages__gte=0)) == introspect.canonical(models.Q(("pages__gte", 0)))
    assert introspect.canonical(models.Q(pages__gte=0)) != introspect.canonical(models.Q(pages__gte=1))
    assert introspect.canonical(models.Q(a=1) | models.Q(b=2)) != introspect.canonical(models.Q(a=1) & models.Q(b=2))
    constraint = models.CheckConstraint(condition=models.Q(pages__gte=0), name="pages_positive")
    assert introspect.canonical(constraint)["arguments"]["condition"] == introspect.canonical(models.Q(pages__gte=0))


def test_plain_values():
    assert introspect.canonical({"b": (1, 2), "a": {3, 1, 2}}) == {"a": {"set": ["1", "2", "3"]}, "b": [1, 2]}
    assert introspect.canonical(dict) == {"class": "dict"}
    assert introspect.canonical(b"\x00\xff") == {"bytes": "00ff"}

    class Thing:
        pass

    shape = introspect.canonical(Thing())
    assert "0x" not in json.dumps(shape)  # an address differs every run
    assert shape["object"] == "Thing"


def test_django_callables_by_name_and_the_migrations_own_functions_by_their_source(tmp_path):
    assert introspect.canonical(migrations.RunPython.noop) == {"callable": "RunPython.noop"}
    assert introspect.canonical(models.CASCADE) == {"callable": "CASCADE"}
    shapes = []
    for body in ("Book.objects.update(pages=0)  # all", "# all of them\n    Book.objects.update(pages=0)",
                 "Book.objects.update(pages=1)"):
        path = tmp_path / ("m%d.py" % len(shapes))
        path.write_text(textwrap.dedent("""\
            from django.db import migrations

            def forwards(apps, schema_editor):
                Book = apps.get_model("books", "Book")
                %s
            """) % body)
        name = "shop.migrations.0002_x"
        spec = importlib.util.spec_from_file_location(name, str(path))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules.pop(name, None)
        shapes.append(checksum(migrations.RunPython(module.forwards, migrations.RunPython.noop), module=name))
        # A function of another module counts by its name only.
        other = introspect.canonical(module.forwards, "shop.migrations.0003_y")
        assert other == {"callable": "forwards", "module": name}
    assert shapes[0] == shapes[1] != shapes[2]


def test_the_checksum_names_its_version():
    value = checksum(migrations.RunSQL("SELECT 1"))
    assert value.startswith("%d:" % introspect.CHECKSUM_VERSION) and len(value.split(":")[1]) == 64
