"""Upstream's settings: every value comes from the environment, with a safe dev default."""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from dashboard.env import database_from_url, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("UPSTREAM_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", True)

_DEV_SECRET = "dev-only-insecure-secret-key-do-not-use-in-production"  # noqa: S105
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET if DEBUG else "")
if not DEBUG and (not SECRET_KEY or SECRET_KEY == _DEV_SECRET or len(SECRET_KEY) < 50):
    raise ImproperlyConfigured("DEBUG=0 needs SECRET_KEY: a random value of at least 50 characters")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "DEBUG=0 needs ALLOWED_HOSTS, e.g. ALLOWED_HOSTS=upstream.example.com"
    )
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Where links in e-mails point.
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "monitoring.apps.UpstreamAdminConfig",  # django.contrib.admin, entered by role
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "django_q",
    # Before monitoring: its post_migrate gives the Admin role every api permission, so those
    # must exist by then.
    "api",
    "monitoring",
    "dashboard",
    "demo",
]

MIDDLEWARE = [
    # First: nothing after it may fail and show a debug page to a non-loopback client.
    "dashboard.middleware.DebugOnlyOnLoopbackMiddleware",
    # Right after: every error under /api/ and /otlp/ leaves as problem+json, never a page.
    "api.problems.ProblemMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # After authentication: pages render times in the user's own zone.
    "dashboard.middleware.TimeZoneMiddleware",
    "dashboard.middleware.PrivatePagesMiddleware",
    "dashboard.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"
ASGI_APPLICATION = "dashboard.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context_processors.upstream",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
    # No JIT for Upstream's sessions (unless the URL sets ?options=…): the bucket reads on a
    # big table are costed past jit_above_cost, and compiling them took longer than running
    # them (README, Sizing: a 7-day overview read went from ~300 ms to ~70 ms without it).
    DATABASES["default"]["OPTIONS"].setdefault("options", "-c jit=off")
    # Parallel runs (several checkouts, one server) each name their own test database.
    if env_str("PG_TEST_NAME"):
        DATABASES["default"]["TEST"] = {"NAME": env_str("PG_TEST_NAME")}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(VAR_DIR / "upstream.sqlite3")),
            "OPTIONS": {
                # Writers queue behind one another instead of failing on upgrade from a read lock.
                "transaction_mode": "IMMEDIATE",
                "timeout": env_int("SQLITE_BUSY_TIMEOUT_S", 20, minimum=1),
                "init_command": (
                    "PRAGMA journal_mode=WAL;"
                    "PRAGMA synchronous=NORMAL;"
                    "PRAGMA busy_timeout=20000;"
                    "PRAGMA temp_store=MEMORY;"
                    "PRAGMA mmap_size=134217728;"
                    "PRAGMA cache_size=-32000;"
                ),
            },
            "TEST": {"NAME": env_str("SQLITE_TEST_PATH", str(VAR_DIR / "test.sqlite3"))},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_REDIS_URL = env_str("REDIS_URL")
# Sign-in throttling counts in the cache: one Redis serves every process; the local-memory
# default serves the one `make run` starts, big enough that a flood of names cannot push
# a lockout out.
if _REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": _REDIS_URL,
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "upstream",
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Development serves straight from static/ (collectstatic is for production).
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
if DEBUG:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Take the client address from X-Forwarded-For (only behind a proxy you trust).
USE_X_FORWARDED_FOR = env_bool("USE_X_FORWARDED_FOR", False)

SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 60 * 60 * 12, minimum=300)

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
# For the file-based backend (the demo writes alert e-mails to var/mail).
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive: set one")
# Django's default is to wait forever on a dead SMTP server.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Upstream <upstream@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# Alerts are sent by e-mail; the system check warns when this is on with no EMAIL_HOST.
ALERT_EMAILS_ENABLED = env_bool("ALERT_EMAILS_ENABLED", True)

Q_CLUSTER = {
    "name": "upstream",
    "workers": env_int("Q_WORKERS", 2, minimum=1),
    "timeout": env_int("Q_TIMEOUT", 120, minimum=1),
    # Must stay above timeout or a slow task is handed out twice (a system check enforces it).
    "retry": env_int("Q_RETRY", 180, minimum=2),
    "max_attempts": 3,
    "queue_limit": 50,
    "bulk": 10,
    "catch_up": False,
    "save_limit": 1000,
    "poll": 0.5,
    "label": "Task queue",
}
if _REDIS_URL:
    Q_CLUSTER["redis"] = _REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"one_line_403": {"()": "dashboard.errors.OneLineForbidden"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # Without Django's own handlers: they print what the root handler prints again.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.request": {"filters": ["one_line_403"]},
        "django_q": {"level": env_str("Q_LOG_LEVEL", "WARNING")},
        # httpx logs every request URL at INFO; query strings can carry secrets.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

# --- Upstream itself -------------------------------------------------------------------------
# The recorder's rows per transaction (a cap: at ordinary rates it writes what is queued).
# SQLite: 2000, one writer lock held for the whole batch. PostgreSQL: 5000, because each
# batch pays fixed costs there (the commit's WAL flush, the bucket upsert, the lock on its
# integrations) and row locks let other writers go on: bench/ingest.py stored 43,000
# rows/s at 2000 and 64,000 at 5000 (10,000 gained nothing more).
_RECORDER_BATCH = 5000 if DATABASES["default"]["ENGINE"].endswith("postgresql") else 2000
UPSTREAM = {
    # Recorder: bounded queue drained in batches by a background thread.
    "RECORDER_QUEUE_SIZE": env_int("UPSTREAM_RECORDER_QUEUE_SIZE", 50_000, minimum=100),
    "RECORDER_BATCH_SIZE": env_int("UPSTREAM_RECORDER_BATCH_SIZE", _RECORDER_BATCH, minimum=1),
    "RECORDER_FLUSH_INTERVAL_MS": env_int("UPSTREAM_RECORDER_FLUSH_INTERVAL_MS", 200, minimum=10),
    "SPOOL_DIR": env_str("UPSTREAM_SPOOL_DIR", str(VAR_DIR / "spool")),
    # A plain-http call to a non-loopback host of an integration that requires https:
    # "refuse" raises, "flag" records it and lets it through.
    "HTTPS_POLICY": env_str("UPSTREAM_HTTPS_POLICY", "refuse"),
    # Retention, in days.
    "RETAIN_RAW_DAYS": env_int("UPSTREAM_RETAIN_RAW_DAYS", 14, minimum=1),
    "RETAIN_MINUTE_DAYS": env_int("UPSTREAM_RETAIN_MINUTE_DAYS", 3, minimum=1),
    "RETAIN_HOUR_DAYS": env_int("UPSTREAM_RETAIN_HOUR_DAYS", 400, minimum=2),
    "RETAIN_PROBE_RESULTS_DAYS": env_int("UPSTREAM_RETAIN_PROBE_RESULTS_DAYS", 14, minimum=1),
    # Probe targets on loopback/private networks are refused unless listed here (host or host:port).
    "PROBE_ALLOW_HOSTS": env_list("UPSTREAM_PROBE_ALLOW_HOSTS", []),
    "PROBE_CONCURRENCY": env_int("UPSTREAM_PROBE_CONCURRENCY", 50, minimum=1),
    # ${NAME} in a probe header may name UPSTREAM_SECRET_* variables and these (never a
    # variable this file reads): see monitoring/envref.py.
    "SECRET_ENV_ALLOW": env_list("UPSTREAM_SECRET_ENV_ALLOW", []),
    # Alert e-mails to one recipient within this many seconds go out as one digest.
    "ALERT_GROUP_WAIT_S": env_int("UPSTREAM_ALERT_GROUP_WAIT_S", 30, minimum=0),
    # Seconds before a notification channel's receiver counts as not answering.
    "CHANNEL_TIMEOUT_S": env_int("UPSTREAM_CHANNEL_TIMEOUT_S", 10, minimum=1),
    # API: per-key rate limit (requests/s and burst) and the ingest request limits.
    "API_RATE_PER_S": env_int("UPSTREAM_API_RATE_PER_S", 50, minimum=1),
    "API_RATE_BURST": env_int("UPSTREAM_API_RATE_BURST", 100, minimum=1),
    "API_MAX_EVENTS": env_int("UPSTREAM_API_MAX_EVENTS", 1000, minimum=1),
    "API_MAX_BODY_BYTES": env_int("UPSTREAM_API_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
    # OTLP export requests, after decompression.
    "OTLP_MAX_BYTES": env_int("UPSTREAM_OTLP_MAX_BYTES", 8 * 1024 * 1024, minimum=1024),
    # Webhook deliveries to /hooks/<token>/: the body cap, and the key (comma-separated for
    # rotation, the first encrypts) for webhook secrets stored as values, not ${ENV} refs.
    "WEBHOOK_MAX_BODY_BYTES": env_int("UPSTREAM_WEBHOOK_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
    "SECRETS_KEY": env_str("UPSTREAM_SECRETS_KEY", ""),
    # Sign-in throttling: this many failures within the window lock the username (or the
    # address) out; the lockout doubles on each repeat within a day, up to the maximum.
    "SIGNIN_FAILURES_PER_USER": env_int("UPSTREAM_SIGNIN_FAILURES_PER_USER", 5, minimum=1),
    "SIGNIN_FAILURES_PER_ADDRESS": env_int("UPSTREAM_SIGNIN_FAILURES_PER_ADDRESS", 20, minimum=1),
    "SIGNIN_WINDOW_S": env_int("UPSTREAM_SIGNIN_WINDOW_S", 900, minimum=1),
    "SIGNIN_LOCKOUT_S": env_int("UPSTREAM_SIGNIN_LOCKOUT_S", 60, minimum=1),
    "SIGNIN_LOCKOUT_MAX_S": env_int("UPSTREAM_SIGNIN_LOCKOUT_MAX_S", 900, minimum=1),
}
if UPSTREAM["HTTPS_POLICY"] not in {"refuse", "flag"}:
    raise ImproperlyConfigured("UPSTREAM_HTTPS_POLICY must be 'refuse' or 'flag'")
