"""Settings for the AI Hub. Every value that differs between machines comes from the
environment through ``hub_site.env``; ``.env.example`` lists them all."""

import os
import re
from pathlib import Path

import csp.constants
import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

from .env import env_bool, env_choice, env_int, env_list, env_str, secret_kept_in

BASE_DIR = Path(__file__).resolve().parent.parent
# A `.env` beside manage.py (see .env.example), or the file HUB_ENV_FILE names; variables
# already in the environment win over it.
load_dotenv(os.environ.get("HUB_ENV_FILE") or BASE_DIR / ".env", override=False)
VAR_DIR = Path(env_str("HUB_VAR_DIR", str(BASE_DIR / "var")))
# The embedded defaults (SQLite, artifacts, the broker's folders) live here; make it
# exist so a fresh clone starts without a manual step.
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
# Unset: a random key generated once and kept in var/, so a fresh clone's commands work as
# written. Hubs served by several machines must share one: set SECRET_KEY (or SECRET_KEY_FILE).
SECRET_KEY = env_str("SECRET_KEY", "") or secret_kept_in(VAR_DIR / "secret_key")
# The placeholder of .env.example: copying the file as it is must not start a production hub.
EXAMPLE_SECRET_KEY = "change-me-to-a-long-random-string"
if SECRET_KEY == EXAMPLE_SECRET_KEY and not DEBUG:
    raise ImproperlyConfigured(
        "SECRET_KEY is still the placeholder from .env.example: set it to the output of "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`."
    )
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_filters",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "templates_catalog",
    "deployments",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "hub_site.middleware.PermissionsPolicyMiddleware",
]

ROOT_URLCONF = "hub_site.urls"
WSGI_APPLICATION = "hub_site.wsgi.application"
ASGI_APPLICATION = "hub_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "templates_catalog.context_processors.accounts",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'hub.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not memory, so test worker processes (Celery) can share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
    # The embedded default must take concurrent writers: WAL lets readers run beside the
    # writer, and IMMEDIATE takes the write lock when a transaction begins, so a second
    # writer waits for it (up to the timeout) instead of failing with "database is locked"
    # when it tries to upgrade a read.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": env_int("SQLITE_BUSY_TIMEOUT_SECONDS", 20, minimum=1),
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
        **DATABASES["default"].get("OPTIONS", {}),
    }
elif DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # The hub's queries are short lookups by index: starting parallel workers costs more than
    # they save (bench/catalog.py, 100,000 templates, 2 cores: a filtered list's count took
    # 16.6 ms with two, 7.5 ms with none).
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _parallel = env_int("DATABASE_PARALLEL_WORKERS", 0, minimum=0)
    _options["options"] = f"-c max_parallel_workers_per_gather={_parallel} {_options.get('options', '')}".strip()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "catalog:login"
LOGIN_REDIRECT_URL = "catalog:home"
LOGOUT_REDIRECT_URL = "catalog:home"
# Who may create an account: anyone ("open"), only holders of a publisher's invitation
# link ("invite"), or nobody ("closed": accounts come from single sign-on or the admin).
SIGNUP_MODE = env_choice("SIGNUP_MODE", "open", ("open", "invite", "closed"))
INVITATION_DAYS = env_int("INVITATION_DAYS", 7, minimum=1)

# Password resets and invitations are emailed; the console backend prints them to the log.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "AI Hub <hub@localhost>")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# htmx is installed from the npm registry by `make`, never copied into the repository.
STATICFILES_DIRS = [("vendor/htmx", BASE_DIR / "node_modules" / "htmx.org" / "dist")]

ARTIFACT_ROOT = Path(env_str("ARTIFACT_ROOT", str(VAR_DIR / "artifacts")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "artifacts": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": ARTIFACT_ROOT},
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
if env_str("ARTIFACT_S3_BUCKET", ""):
    STORAGES["artifacts"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("ARTIFACT_S3_BUCKET"),
            "endpoint_url": env_str("ARTIFACT_S3_ENDPOINT_URL", "") or None,
            "region_name": env_str("ARTIFACT_S3_REGION", "") or None,
            "file_overwrite": False,
            "default_acl": None,
        },
    }

# Limits on what a publisher's bundle may contain; uploads and seeding share them.
BUNDLE_MAX_BYTES = env_int("BUNDLE_MAX_BYTES", 100 * 1024 * 1024, minimum=1024)
BUNDLE_MAX_MEMBERS = env_int("BUNDLE_MAX_MEMBERS", 2000, minimum=1)
BUNDLE_MAX_UNPACKED_BYTES = env_int("BUNDLE_MAX_UNPACKED_BYTES", 512 * 1024 * 1024, minimum=1024)
BUNDLE_MAX_COMPRESSION_RATIO = env_int("BUNDLE_MAX_COMPRESSION_RATIO", 50, minimum=1)

CATALOG_PAGE_SIZE = env_int("CATALOG_PAGE_SIZE", 24, minimum=1)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "templates_catalog.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "templates_catalog.api.errors.hub_exception_handler",
    "DEFAULT_THROTTLE_RATES": {"uploads": env_str("UPLOAD_RATE", "30/minute")},
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer", "rest_framework.renderers.BrowsableAPIRenderer"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "AI Hub API",
    "DESCRIPTION": "Browse the template catalog and publish template bundles. Authenticate with `Authorization: Bearer <token>`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files come from the drf-spectacular-sidecar package: no CDN, works air-gapped.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}
# Throttle counters: shared through Redis when the hub runs several processes.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": env_str("CACHE_URL")}
        if env_str("CACHE_URL", "")
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# Builds: "docker", "venv", the dotted path of a backend class, or "auto": the worker
# uses the Docker Engine when one answers, else local virtualenvs (hub_site/backends.py).
BUILD_BACKEND = env_str("BUILD_BACKEND", "auto")
if BUILD_BACKEND not in {"auto", "docker", "venv"} and "." not in BUILD_BACKEND:
    raise ImproperlyConfigured(
        f"BUILD_BACKEND={BUILD_BACKEND!r} is not a backend: write auto, docker, venv or the dotted path of a backend class."
    )
BUILD_BASE_IMAGE = env_str("BUILD_BASE_IMAGE", "python:3.11-slim")
BUILD_REGISTRY = env_str("BUILD_REGISTRY", "")
BUILD_NO_CACHE = env_bool("BUILD_NO_CACHE", False)
BUILD_TIMEOUT_SECONDS = env_int("BUILD_TIMEOUT_SECONDS", 3600, minimum=60)
# How long a built service may take to answer its ready path before its build fails.
BUILD_VERIFY_TIMEOUT_SECONDS = env_int("BUILD_VERIFY_TIMEOUT_SECONDS", 300, minimum=1)
BUILD_ON_PUBLISH = env_bool("BUILD_ON_PUBLISH", False)
WHEELHOUSE_DIR = Path(env_str("WHEELHOUSE_DIR", str(VAR_DIR / "wheelhouse")))
DEB_CACHE_DIR = Path(env_str("DEB_CACHE_DIR", str(VAR_DIR / "debs")))
# The most Debian packages (in MB, dependencies included) one build's system_packages may pull.
BUILD_SYSTEM_PACKAGES_MAX_MB = env_int("BUILD_SYSTEM_PACKAGES_MAX_MB", 500, minimum=1)
HARNESS_DIR = BASE_DIR / "runners" / "harness"
HUB_PUBLIC_URL = env_str("HUB_PUBLIC_URL", "http://127.0.0.1:8000")

# Deployments: how long a launched run may take to answer its ready path, how often a
# run that died is restarted before its deployment fails, and the reconciler's period.
DEPLOY_READY_TIMEOUT_SECONDS = env_int("DEPLOY_READY_TIMEOUT_SECONDS", 300, minimum=1)
DEPLOY_MAX_RESTARTS = env_int("DEPLOY_MAX_RESTARTS", 3, minimum=0)
# Jobs: the largest uploaded input file and the largest output each may store, and how
# long a job may run before it is stopped and failed.
JOB_INPUT_MAX_BYTES = env_int("JOB_INPUT_MAX_BYTES", 100 * 1024**2, minimum=1)
JOB_OUTPUT_MAX_BYTES = env_int("JOB_OUTPUT_MAX_BYTES", 1024**3, minimum=1)
JOB_TIMEOUT_SECONDS = env_int("JOB_TIMEOUT_SECONDS", 6 * 3600, minimum=1)
RECONCILE_INTERVAL_SECONDS = env_int("RECONCILE_INTERVAL_SECONDS", 5, minimum=1)
# Sleep when idle: the idle timeout a deployment gets unless its deploy says otherwise
# (0: never sleep), how often the beat task looks for idle deployments, and how often each
# process writes what its gateway counted (requests, bytes, the last request's time).
DEPLOY_IDLE_TIMEOUT_SECONDS = env_int("DEPLOY_IDLE_TIMEOUT_SECONDS", 900, minimum=0)
# The machine the hub runs on, registered as the node "local" on first deploy, counts each of
# its cores this many times: a template's `cpu` is what it reserves on a GPU node, and on one
# machine parts of a graph share cores (the stock agent's five parts ask 6 CPUs; a laptop has
# 2 to 8). Nodes added with node_add or node_pool_add count their cores once.
LOCAL_NODE_CPU_SHARE = env_int("LOCAL_NODE_CPU_SHARE", 4, minimum=1)
# This hub's name on the engines it runs on (the io.aihub.hub label of its containers,
# services and pods): the reconciler removes any run with its name that it does not own, so
# two hubs on one engine (a `make run` beside the test suite, staging beside production) need
# two names.
HUB_ID = env_str("HUB_ID", "aihub")
if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?", HUB_ID):
    raise ImproperlyConfigured(f"HUB_ID={HUB_ID!r}: use 1 to 40 lower-case letters, digits and dashes (a label value)")
SLEEP_CHECK_INTERVAL_SECONDS = env_int("SLEEP_CHECK_INTERVAL_SECONDS", 5, minimum=1)
ACTIVITY_FLUSH_SECONDS = 1.0
# /metrics (Prometheus): open to anyone who reaches the hub, or (the default) to staff only.
HUB_METRICS_PUBLIC = env_bool("HUB_METRICS_PUBLIC", False)

# The gateway (/d/<deployment>/...): how long it waits to connect to an endpoint, and for
# each piece of its answer (a long generation streams), and how many connections it keeps
# open to all endpoints together.
GATEWAY_CONNECT_TIMEOUT_SECONDS = env_int("GATEWAY_CONNECT_TIMEOUT_SECONDS", 5, minimum=1)
GATEWAY_READ_TIMEOUT_SECONDS = env_int("GATEWAY_READ_TIMEOUT_SECONDS", 300, minimum=1)
GATEWAY_MAX_CONNECTIONS = env_int("GATEWAY_MAX_CONNECTIONS", 1000, minimum=1)
# How long the gateway holds a request while its deployment wakes (or comes up) before a 503.
GATEWAY_WAKE_HOLD_SECONDS = env_int("GATEWAY_WAKE_HOLD_SECONDS", 120, minimum=1)
# On PostgreSQL the gateway keeps what it looked up of running deployments in each process,
# dropping it as soon as the database announces a change (deployments/target_cache.py), and
# in any case after this many seconds. Off: every request looks its token up.
GATEWAY_TARGET_CACHE = env_bool("GATEWAY_TARGET_CACHE", True)
GATEWAY_TARGET_CACHE_SECONDS = env_int("GATEWAY_TARGET_CACHE_SECONDS", 60, minimum=1)
# uvicorn's access log leaves out gateway requests answered below 400 (they are counted per
# deployment and in /metrics, and a line each costs a proxy's share of CPU); on: every one.
GATEWAY_ACCESS_LOG = env_bool("GATEWAY_ACCESS_LOG", False)
# The "Try it" form on a deployment's page: seconds it waits for the answer, a wake included,
# and the largest answer it shows (bigger ones: call the endpoint with a token).
TRY_IT_TIMEOUT_SECONDS = env_int("TRY_IT_TIMEOUT_SECONDS", 120, minimum=1)
TRY_IT_MAX_ANSWER_BYTES = env_int("TRY_IT_MAX_ANSWER_BYTES", 2 * 1024 * 1024, minimum=1024)
# The hub as the endpoints themselves reach it: an app calls what it requires through the
# gateway at <this>/d/<handle>/. Local processes reach the hub on loopback; containers on
# the default bridge reach the host as host.docker.internal (the Docker runner maps it).
GATEWAY_INTERNAL_URL = env_str("GATEWAY_INTERNAL_URL", f"http://127.0.0.1:{env_int('PORT', 8000, minimum=1)}").rstrip("/")

# Celery: a broker that needs no server by default (kombu's filesystem transport),
# Redis or RabbitMQ in production through CELERY_BROKER_URL.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(VAR_DIR / "celery" / "queue"),
        "data_folder_out": str(VAR_DIR / "celery" / "queue"),
        "processed_folder": str(VAR_DIR / "celery" / "processed"),
        "control_folder": str(VAR_DIR / "celery" / "control"),
        "store_processed": False,
    }
    if CELERY_BROKER_URL.startswith("filesystem://")
    else {}
)
if not CELERY_BROKER_URL.startswith("filesystem://"):
    # Longer than any build: an unacknowledged build is redelivered only after this.
    CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] = env_int("CELERY_VISIBILITY_TIMEOUT", 2 * 3600, minimum=1)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE = {
    "reap-stale-builds": {"task": "templates_catalog.builds_reap_stale", "schedule": 300.0},
    "sweep-unreferenced-blobs": {"task": "templates_catalog.blobs_sweep_unreferenced", "schedule": 3600.0},
}
# A stored bundle that no version references is deleted by the sweeper only once it is
# older than this: an upload writes its blob before its row, and may be mid-publish.
BLOB_SWEEP_GRACE_SECONDS = env_int("BLOB_SWEEP_GRACE_SECONDS", 24 * 3600, minimum=60)

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# HTTPS. Off by default, so a laptop or a plain-HTTP test install works; .env.example turns
# them on for a hub served over HTTPS. Behind a proxy that terminates TLS, Django only learns
# the scheme from the header the proxy sets (e.g. X-Forwarded-Proto): without it an HTTPS
# redirect would loop. Name that header only if the proxy overwrites what clients send.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
_proxy_ssl_header = env_str("SECURE_PROXY_SSL_HEADER", "")
SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https") if _proxy_ssl_header else None
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Pages run only the hub's own files: no inline script or style, no eval, nothing from
# elsewhere but README images over https. A publisher's README is sanitised too; this
# is the second wall if that ever lets something through.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp.constants.NONE],
        "script-src": [csp.constants.SELF],
        "style-src": [csp.constants.SELF],
        "img-src": [csp.constants.SELF, "https:"],
        "font-src": [csp.constants.SELF],
        "connect-src": [csp.constants.SELF],
        "form-action": [csp.constants.SELF],
        "frame-ancestors": [csp.constants.NONE],
        "base-uri": [csp.constants.NONE],
        "object-src": [csp.constants.NONE],
    }
}
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # httpx logs every request at INFO: one line per gateway request would be the gateway's log.
    "loggers": {"httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}
