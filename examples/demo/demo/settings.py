"""Settings of the dbsafe.django demo project.

Everything that differs between machines comes from environment variables (see README.md):
the database (``DEMO_DB_*``, SQLite by default), the media directory, the secret key and
DEBUG. No credentials are stored here.

Keep this file compatible with Python 3.8 and Django 3.2 (no walrus, no ``match``, no
``X | None`` annotations): the collection supports managed hosts that old.
"""
import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _env(name, default=""):
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def _env_flag(name):
    return _env(name).lower() in ("1", "true", "yes", "on")


# --- Security -------------------------------------------------------------------------------

# The default is deliberately, visibly insecure: it is only good for the demo.
SECRET_KEY = _env("DEMO_SECRET_KEY", "insecure-demo-secret-key-do-not-use-in-production")
DEBUG = _env_flag("DEMO_DEBUG")
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"] + [
    host.strip() for host in _env("DEMO_ALLOWED_HOSTS").split(",") if host.strip()
]

# --- Applications ---------------------------------------------------------------------------

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "authors",
    "books",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo.urls"
WSGI_APPLICATION = "demo.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------

_ENGINE_ALIASES = {
    "sqlite": "sqlite",
    "sqlite3": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "pgsql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}

DEMO_DB_ENGINE = _ENGINE_ALIASES.get(_env("DEMO_DB_ENGINE", "sqlite").lower())
if DEMO_DB_ENGINE is None:
    raise ImproperlyConfigured(
        "DEMO_DB_ENGINE must be sqlite, postgresql or mysql, not %r"
        % os.environ.get("DEMO_DB_ENGINE")
    )


def _password():
    """DEMO_DB_PASSWORD, or the first line of the file DEMO_DB_PASSWORD_FILE (a compose or
    Kubernetes secret mounted as a file keeps the password out of the environment)."""
    path = _env("DEMO_DB_PASSWORD_FILE")
    if not path:
        return os.environ.get("DEMO_DB_PASSWORD", "")
    try:
        with open(path) as handle:
            return handle.readline().rstrip("\n")
    except OSError as error:
        raise ImproperlyConfigured("DEMO_DB_PASSWORD_FILE %s cannot be read: %s" % (path, error))


if DEMO_DB_ENGINE == "sqlite":
    _database = {
        "ENGINE": "django.db.backends.sqlite3",
        # For SQLite DEMO_DB_NAME is the path of the database file.
        "NAME": _env("DEMO_DB_NAME", str(BASE_DIR / "db.sqlite3")),
    }
else:
    _database = {
        "NAME": _env("DEMO_DB_NAME", "demo"),
        "HOST": _env("DEMO_DB_HOST"),
        "PORT": _env("DEMO_DB_PORT"),
        "USER": _env("DEMO_DB_USER"),
        "PASSWORD": _password(),
    }
    if DEMO_DB_ENGINE == "postgresql":
        _database["ENGINE"] = "django.db.backends.postgresql"
    else:
        # PyMySQL instead of mysqlclient: pure Python, nothing to compile on the hosts.
        import pymysql

        # Django refuses MySQLdb older than 1.4.3 (Django 3.2: 1.4.0). install_as_MySQLdb()
        # makes PyMySQL pose as mysqlclient with its own version_info, which recent PyMySQL
        # releases already set high enough (1.1+: 2.2.x); older ones report 1.3.x or 1.4.0,
        # so raise the advertised version there. PyMySQL implements the DB-API that Django's
        # backend uses either way.
        if tuple(pymysql.version_info[:3]) < (1, 4, 3):
            pymysql.version_info = (1, 4, 6, "final", 0)
        pymysql.install_as_MySQLdb()

        _database["ENGINE"] = "django.db.backends.mysql"
        _database["OPTIONS"] = {
            "charset": "utf8mb4",
            "init_command": "SET sql_mode='STRICT_TRANS_TABLES'",
        }

DATABASES = {"default": _database}

# Explicit, so the migrations are the same whatever the Django version's default is.
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Passwords, i18n ------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media files -----------------------------------------------------------------

STATIC_URL = "/static/"
# Only needed for collectstatic; unset unless DEMO_STATIC_ROOT says where.
STATIC_ROOT = _env("DEMO_STATIC_ROOT") or None

MEDIA_URL = "/media/"
# The committed sample files live in media/covers/; uploads go to media/uploads/ (ignored).
MEDIA_ROOT = _env("DEMO_MEDIA_ROOT", str(BASE_DIR / "media"))
