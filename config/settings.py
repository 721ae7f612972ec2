"""The one settings module, configured by environment variables (see README, "Configuration").

With no environment at all the project runs in its embedded development mode: SQLite under
var/, Channels' in-memory layer, a Celery broker on the filesystem, DEBUG on. Production mode
(DJANGO_ENV=production) refuses to start without a real SECRET_KEY and ALLOWED_HOSTS.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import Env

env = Env()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.str("VAR_DIR", str(BASE_DIR / "var")))

DJANGO_ENV = env.choice("DJANGO_ENV", "development", ("development", "production"))
PRODUCTION = DJANGO_ENV == "production"


def _development_secret_key() -> str:
    # Persisted so that sessions and JWTs survive a restart of the development server.
    path = VAR_DIR / "dev_secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(64))
        path.chmod(0o600)
    return path.read_text().strip()


if PRODUCTION:
    SECRET_KEY = env.required("SECRET_KEY", "production needs a long random secret")
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure"):
        raise ImproperlyConfigured(
            "SECRET_KEY is too weak: use at least 50 random characters "
            '(python -c "import secrets; print(secrets.token_urlsafe(64))")'
        )
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("ALLOWED_HOSTS must be set in production (comma-separated)")
    DEBUG = env.bool("DEBUG", False)
    if DEBUG:
        raise ImproperlyConfigured("DEBUG must not be on in production")
else:
    SECRET_KEY = env.str("SECRET_KEY") or _development_secret_key()
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
    DEBUG = env.bool("DEBUG", True)

CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "csp",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "accounts",
    "chat",
    "monitoring",
    "uploads",
]

MIDDLEWARE = [
    "config.metrics.RequestMetricsMiddleware",  # first: it counts every answer, refusals too
    "django.middleware.security.SecurityMiddleware",
    # WhiteNoise, async-capable: no thread hop for the requests that are not static files.
    "config.static_files.AsyncWhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    # Django's own (and django-csp's), with their hooks on the event loop rather than a thread
    # hop each, unless they may do I/O (config/inline_middleware.py). Security, CSRF and
    # X-Frame-Options keep Django's names: `check --deploy` looks for them by name.
    "config.inline_middleware.InlineSessionMiddleware",
    "config.inline_middleware.InlineCommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "config.inline_middleware.InlineAuthenticationMiddleware",
    "config.inline_middleware.InlineMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.inline_middleware.InlineCSPMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

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
                "accounts.context_processors.site",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------

DATABASE_URL = env.str("DATABASE_URL")
# PostgreSQL connections per process, from psycopg's pool (0: no pool, e.g. behind PgBouncer in
# transaction mode, which pools itself). Generations hand their connection back after every
# step, so a handful serve hundreds of concurrent replies (see config/database.py).
DB_POOL_MAX_SIZE = env.int("DB_POOL_MAX_SIZE", 8, minimum=0, maximum=1000)
DB_POOL_TIMEOUT = env.float("DB_POOL_TIMEOUT", 10.0, minimum=0.1)
# Threads that run the database work of generations (bounded; see config/database.py).
DB_ASYNC_THREADS = env.int("DB_ASYNC_THREADS", max(1, min(4, DB_POOL_MAX_SIZE or 4)), minimum=1)
if DATABASE_URL:
    try:
        _database = dj_database_url.parse(
            DATABASE_URL,
            # Persistent connections are unsafe under ASGI (Django's docs): default 0. With
            # the pool, closing a connection hands it back to the pool.
            conn_max_age=env.int("DB_CONN_MAX_AGE", 0, minimum=0),
            conn_health_checks=True,
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if _database["ENGINE"] == "django.db.backends.postgresql":
        _options = _database.setdefault("OPTIONS", {})
        if DB_POOL_MAX_SIZE:
            if _database.get("CONN_MAX_AGE"):
                raise ImproperlyConfigured("DB_CONN_MAX_AGE must be 0 with the connection pool")
            _options["pool"] = {
                "min_size": 1,
                "max_size": DB_POOL_MAX_SIZE,
                # Health checks (conn_health_checks) make the pool test a connection before
                # handing it out: one broken by a database restart is replaced, not used.
                "timeout": DB_POOL_TIMEOUT,
            }
        # Behind PgBouncer in transaction mode: no server-side cursors, no prepared statements.
        _database["DISABLE_SERVER_SIDE_CURSORS"] = env.bool("DB_DISABLE_SERVER_SIDE_CURSORS", False)
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    _database = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(VAR_DIR / "db.sqlite3")}
if _database["ENGINE"] == "django.db.backends.sqlite3":
    _database["OPTIONS"] = {
        # Web, worker and beat share the file: WAL and immediate transactions avoid
        # "database is locked" under concurrent writers.
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory, so that the Daphne and Celery processes of integration tests see
    # the test database too (they are handed its name); one per test run.
    _database["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, cache, Celery broker, the generation gate ------------------------

REDIS_URL = env.str("REDIS_URL")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("REDIS_URL must start with redis://, rediss:// or unix://")

# Every Redis client: a read timeout longer than channels-redis' 5 s blocking pop (redis-py's
# default of 5 s equals it, so an idle socket's receive timed out and closed it with 1011),
# keepalive, and a health check of a pooled connection idle for a while, so that the first
# command after a Redis restart reconnects instead of failing.
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", 15.0, minimum=6.0)
# Connections per pool (each process has a few: channel layer, gate, cache); a request for
# one more waits up to REDIS_POOL_TIMEOUT seconds rather than failing.
REDIS_MAX_CONNECTIONS = env.int("REDIS_MAX_CONNECTIONS", 100, minimum=2)
REDIS_POOL_TIMEOUT = env.float("REDIS_POOL_TIMEOUT", 10.0, minimum=0.1)
REDIS_CLIENT_OPTIONS = {
    "socket_timeout": REDIS_SOCKET_TIMEOUT,
    "socket_connect_timeout": 5.0,
    "socket_keepalive": True,
    "health_check_interval": 10,
    "retry_on_timeout": True,
}
# The pools of the channel layer and the gate: they wait for a free connection rather than fail.
REDIS_POOL_OPTIONS = {
    **REDIS_CLIENT_OPTIONS,
    "max_connections": REDIS_MAX_CONNECTIONS,
    "timeout": REDIS_POOL_TIMEOUT,  # the wait for a pooled connection
}
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "config.channel_layers.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, **REDIS_POOL_OPTIONS}],
                "capacity": 1000,
                # All of a process's sockets share one Redis list ("specific." channels): under
                # a burst of a few hundred streams it holds thousands of frames, and a full one
                # drops frames silently.
                "channel_capacity": {"specific.*": 50_000},
                "expiry": 60,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": dict(REDIS_CLIENT_OPTIONS),
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "config.channel_layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 1000},  # per socket; a full one drops frames silently
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery ---------------------------------------------------------------------------------

if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # The broker's Redis clients like every other: keepalive, a read timeout, health checks of
    # idle pooled connections, a retry of a timed-out command.
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = dict(REDIS_CLIENT_OPTIONS)
else:
    # kombu's filesystem transport: a broker that needs no server, for the embedded mode.
    # Every folder of it is named: kombu's default for the exchange tables (control_folder)
    # is ./control, in whatever the current directory is.
    _celery_dir = VAR_DIR / "celery"
    for _folder in ("queue", "control"):
        (_celery_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_celery_dir / "queue"),
        "data_folder_out": str(_celery_dir / "queue"),
        "control_folder": str(_celery_dir / "control"),
        "store_processed": False,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None  # a long Redis outage is a wait, not an exit
# Celery 6's default; without it every reconnect logs a deprecation warning.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", 300, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = max(1, CELERY_TASK_TIME_LIMIT - 10)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict = {}
CELERY_TIMEZONE = "UTC"

# --- Auth -----------------------------------------------------------------------------------

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
REGISTRATION_ENABLED = env.bool("REGISTRATION_ENABLED", False)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Per IP and per account, on the token endpoint and the login page.
LOGIN_RATE_PER_IP = env.rate("LOGIN_RATE_PER_IP", "30/min")
LOGIN_RATE_PER_ACCOUNT = env.rate("LOGIN_RATE_PER_ACCOUNT", "10/min")

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", 15, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.float("JWT_REFRESH_DAYS", 1, minimum=0.01)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY") or SECRET_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
    # Tokens carry a digest of the password hash they were issued under: a password change
    # refuses them everywhere (accounts.tokens; its refresh tokens are blacklisted as well).
    "CHECK_REVOKE_TOKEN": True,
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Personal API keys (`og_…`) first, with their scope; any other bearer is a JWT.
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON with a depth and an integer-size limit (core.safejson): 400 parse_error, not a 500.
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "config.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "config.schema.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {
        "login_ip": LOGIN_RATE_PER_IP,
        "login_account": LOGIN_RATE_PER_ACCOUNT,
    },
    "NUM_PROXIES": env.int("NUM_PROXIES", 0, minimum=0),
    "EXCEPTION_HANDLER": "config.exceptions.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Ollama Gateway API",
    "DESCRIPTION": "Accounts, chat, uploads and monitoring in front of Ollama.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI and ReDoc served from our own static files: no CDN at run time.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS")
CORS_URLS_REGEX = r"^/(api|ollama|v1)/.*$"

# --- Static and media -----------------------------------------------------------------------

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION
if not PRODUCTION:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# --- Security -------------------------------------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Model output is untrusted text rendered in our pages: the policy is the second line of
# defence behind the Markdown sanitiser. No page of ours needs inline code or other origins
# ('self' covers the same-origin WebSocket); the API docs relax it in config/urls.py.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
if PRODUCTION:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", True)
    if env.bool("TRUST_X_FORWARDED_PROTO", False):
        # Only behind a proxy that sets the header itself and strips it from clients.
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$"]

# --- Health ---------------------------------------------------------------------------------

# Seconds each check of /ready (database, channel layer, Ollama) gets before it counts as down.
READY_CHECK_TIMEOUT = env.float("READY_CHECK_TIMEOUT", 3.0, minimum=0.1)

# --- Ollama and chat ------------------------------------------------------------------------

OLLAMA_URLS = env.list("OLLAMA_URLS") or [env.str("OLLAMA_URL", "http://127.0.0.1:11434")]
for _url in OLLAMA_URLS:
    if not _url.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"Ollama URL {_url!r} must start with http:// or https://")
OLLAMA_URLS = [_url.rstrip("/") for _url in OLLAMA_URLS]
# Unset: the first model the Ollama hosts list (their most recently pulled one).
OLLAMA_DEFAULT_MODEL = env.str("OLLAMA_DEFAULT_MODEL", "")
OLLAMA_CONNECT_TIMEOUT = env.float("OLLAMA_CONNECT_TIMEOUT", 5.0, minimum=0.1)
OLLAMA_READ_TIMEOUT = env.float("OLLAMA_READ_TIMEOUT", 300.0, minimum=1.0)
# The HTTP stack under core.ollama, behind the same httpx API and failing with the same errors:
# aiohttp (C parser, cheap pool), which costs less per streamed chunk and per request than
# httpx's own httpcore and h11 (docs/performance.md, change 7); `httpx` remains as a fallback.
OLLAMA_HTTP_CLIENT = env.choice("OLLAMA_HTTP_CLIENT", "aiohttp", ("httpx", "aiohttp"))
# Tokens: the context window of a chat that sets no num_ctx; mirror the Ollama server's own
# OLLAMA_CONTEXT_LENGTH (4096 by default). A model's shorter context length still wins.
OLLAMA_CONTEXT_LENGTH = env.int("OLLAMA_CONTEXT_LENGTH", 4096, minimum=256)
# The gate: generations in flight per Ollama host, and how many may wait behind them.
OLLAMA_MAX_CONCURRENCY = env.int("OLLAMA_MAX_CONCURRENCY", 1, minimum=1)
OLLAMA_MAX_QUEUE = env.int("OLLAMA_MAX_QUEUE", 32, minimum=0)
OLLAMA_GATE_LEASE_SECONDS = env.float("OLLAMA_GATE_LEASE_SECONDS", 30.0, minimum=1.0)
# "turns": the queue serves waiting users in turn (weighted by their priority); "fifo": in
# arrival order, whoever sent them (kept for comparison: tests/bench/fair_queue.py).
# Prometheus' /metrics: off (404) unless a bearer token or networks allowed to scrape are set;
# with both, a scrape needs both. Networks are matched against the peer's address (REMOTE_ADDR).
METRICS_TOKEN = env.str("METRICS_TOKEN", "")
METRICS_ALLOWED_NETWORKS = [
    env.network("METRICS_ALLOWED_NETWORKS", item) for item in env.list("METRICS_ALLOWED_NETWORKS")
]
OLLAMA_GATE_POLICY = env.choice("OLLAMA_GATE_POLICY", "turns", ("turns", "fifo"))
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", 32_000, minimum=1)
# The /ollama/ proxy: all of a request's messages (or prompt, system and suffix) together.
OLLAMA_PROXY_MAX_CHARS = env.int(
    "OLLAMA_PROXY_MAX_CHARS", 8 * CHAT_MAX_MESSAGE_CHARS, minimum=CHAT_MAX_MESSAGE_CHARS
)
# Seconds: the longest keep_alive a user may ask of Ollama (longer, negative = forever, and
# under a minute, 0 = unload, are for staff only).
OLLAMA_KEEP_ALIVE_MAX = env.int("OLLAMA_KEEP_ALIVE_MAX", 3600, minimum=60)
# Unset: as many past exchanges as fit the model's context window; set: a server-wide cap.
CHAT_CONTEXT_EXCHANGES: int | None = (
    env.int("CHAT_CONTEXT_EXCHANGES", 0, minimum=0)
    if env.raw("CHAT_CONTEXT_EXCHANGES") is not None
    else None
)
CHAT_FLUSH_INTERVAL = env.float("CHAT_FLUSH_INTERVAL", 0.5, minimum=0.05)
CHAT_STALE_STREAMING_SECONDS = env.int("CHAT_STALE_STREAMING_SECONDS", 900, minimum=60)
# Each web process beats every this many seconds; one silent for three beats is dead and its
# replies become `interrupted` (chat/lifecycle.py).
CHAT_HEARTBEAT_SECONDS = env.float("CHAT_HEARTBEAT_SECONDS", 2.0, minimum=0.1, maximum=60.0)
# On SIGTERM: seconds running generations may take to finish before they are interrupted.
CHAT_SHUTDOWN_GRACE_SECONDS = env.float("CHAT_SHUTDOWN_GRACE_SECONDS", 20.0, minimum=0.0)
# Seconds after every socket following a WebSocket generation has gone before it is stopped
# (kept as `cancelled`, code `abandoned`), when other users wait on its host (0: never).
CHAT_CANCEL_ABANDONED = env.int("CHAT_CANCEL_ABANDONED", 0, minimum=0, maximum=86400)
# Per user, on every transport (0: no limit).
CHAT_MESSAGES_PER_MINUTE = env.int("CHAT_MESSAGES_PER_MINUTE", 30, minimum=0)
CHAT_MAX_GENERATIONS_PER_USER = env.int("CHAT_MAX_GENERATIONS_PER_USER", 3, minimum=0)
# Tokens per user per calendar day of TIME_ZONE, on every transport (0: unlimited); a user's
# own budget (the admin's "Limits") wins. Generated tokens (Ollama's eval_count), and with
# CHAT_BUDGET_COUNTS_PROMPT the prompt's too (prompt_eval_count). See chat/budgets.py.
CHAT_DAILY_TOKEN_BUDGET = env.int("CHAT_DAILY_TOKEN_BUDGET", 0, minimum=0)
CHAT_BUDGET_COUNTS_PROMPT = env.bool("CHAT_BUDGET_COUNTS_PROMPT", False)
# A backstop for the web processes' own sweeps: it also finds the replies of a web tier that
# died entirely.
CELERY_BEAT_SCHEDULE["chat-mark-interrupted"] = {
    "task": "chat.mark_interrupted",
    "schedule": 10.0,
    "options": {"expires": 9},
}

# --- Uploads --------------------------------------------------------------------------------

# Files are stored under MEDIA_ROOT/uploads/ and only ever served by the download view.
# The largest accepted file, enforced while the request body streams in.
UPLOAD_MAX_BYTES = env.int("UPLOAD_MAX_BYTES", 20 * 1024 * 1024, minimum=1)
# The total size of one user's files.
UPLOAD_QUOTA_BYTES = env.int("UPLOAD_QUOTA_BYTES", 500 * 1024 * 1024, minimum=1)
# Uploads per user, in DRF's rate syntax ("30/min", "100/hour").
UPLOAD_RATE = env.rate("UPLOAD_RATE", "30/min")
# Characters of an attached document's text put into a chat's context.
ATTACHMENT_MAX_CHARS = env.int("ATTACHMENT_MAX_CHARS", 20_000, minimum=1)
# A PDF's text is read once, on first use, by a child process with these limits (a hostile
# PDF of a few KB can burn minutes of CPU); hitting one makes it `attachment_unreadable`.
UPLOAD_EXTRACT_CPU_SECONDS = env.int("UPLOAD_EXTRACT_CPU_SECONDS", 10, minimum=1, maximum=3600)
UPLOAD_EXTRACT_WALL_SECONDS = env.float(
    "UPLOAD_EXTRACT_WALL_SECONDS", 30.0, minimum=1.0, maximum=3600.0
)
UPLOAD_EXTRACT_MEMORY_MB = env.int("UPLOAD_EXTRACT_MEMORY_MB", 512, minimum=128, maximum=65536)
UPLOAD_EXTRACT_MAX_PAGES = env.int("UPLOAD_EXTRACT_MAX_PAGES", 200, minimum=1)
# Children parsing PDFs at once per web process (the others wait their turn).
UPLOAD_EXTRACT_CONCURRENCY = env.int("UPLOAD_EXTRACT_CONCURRENCY", 2, minimum=1)

# --- Export, import, share (chat/exports.py, chat/imports.py, chat/shares.py) -----------------

# The largest file POST /api/conversations/import/ reads (parsed in the request, so bounded),
# and the conversations and messages one import may create.
IMPORT_MAX_BYTES = env.int("IMPORT_MAX_BYTES", min(UPLOAD_MAX_BYTES, 20 * 1024 * 1024), minimum=1)
IMPORT_MAX_CONVERSATIONS = env.int("IMPORT_MAX_CONVERSATIONS", 1000, minimum=1)
IMPORT_MAX_MESSAGES = env.int("IMPORT_MAX_MESSAGES", 20_000, minimum=1)
# Read-only links to a conversation (/s/<token>): off, users (anyone logged in here), public.
SHARE_LINKS = env.choice("SHARE_LINKS", "users", ("off", "users", "public"))
# Uploads inside a static folder would be served by WhiteNoise, bypassing owner checks and the
# download view's headers.
for _static_dir in [STATIC_ROOT, *STATICFILES_DIRS]:
    if MEDIA_ROOT.resolve().is_relative_to(Path(_static_dir).resolve()):
        raise ImproperlyConfigured(
            f"MEDIA_ROOT ({MEDIA_ROOT}) must not be inside the static folder {_static_dir}"
        )

# --- Monitoring -----------------------------------------------------------------------------

import socket as _socket  # noqa: E402  (only this section needs it)

# Seconds between telemetry samples (GPU, RAM, CPU, Ollama's loaded models).
TELEMETRY_INTERVAL = env.float("TELEMETRY_INTERVAL", 5.0, minimum=1.0, maximum=3600.0)
TELEMETRY_RETENTION_DAYS = env.int("TELEMETRY_RETENTION_DAYS", 7, minimum=1)
# The name this machine's samples are tagged with: several GPU machines report into one database.
TELEMETRY_HOST = env.str("TELEMETRY_HOST") or _socket.gethostname() or "localhost"
# Empty (one machine): beat sends sampling to the default queue. Set to the machines' names
# (comma-separated): beat sends one sampling task per machine to the queue telemetry.<host>,
# consumed by that machine's own worker (`celery -A config worker -Q telemetry.<host>`).
TELEMETRY_HOSTS = env.list("TELEMETRY_HOSTS")
# The Ollama servers whose loaded models this machine reports (with several machines, each
# should name its own local Ollama so that no server is reported twice).
TELEMETRY_OLLAMA_URLS = [
    _url.rstrip("/") for _url in env.list("TELEMETRY_OLLAMA_URLS")
] or OLLAMA_URLS
for _name in [TELEMETRY_HOST, *TELEMETRY_HOSTS]:
    # The name becomes part of a queue name and a filter value.
    if len(_name) > 255 or not all(_c.isalnum() or _c in "._-" for _c in _name):
        raise ImproperlyConfigured(
            f"telemetry host name {_name!r} may only contain letters, digits, '.', '_' and '-'"
        )
for _url in TELEMETRY_OLLAMA_URLS:
    if not _url.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"TELEMETRY_OLLAMA_URLS: {_url!r} must start with http(s)://")

# A sample not taken within one interval is worthless: expire it rather than let a stopped
# worker come back to a backlog of stale sampling tasks.
for _host in TELEMETRY_HOSTS or (None,):
    CELERY_BEAT_SCHEDULE[
        f"monitoring.sample_telemetry.{_host}" if _host else "monitoring.sample_telemetry"
    ] = {
        "task": "monitoring.tasks.sample_telemetry",
        "schedule": TELEMETRY_INTERVAL,
        "kwargs": {"host": _host} if _host else {},
        "options": {"expires": TELEMETRY_INTERVAL}
        | ({"queue": f"telemetry.{_host}"} if _host else {}),
    }
CELERY_BEAT_SCHEDULE["monitoring.prune_telemetry"] = {
    "task": "monitoring.tasks.prune_telemetry",
    "schedule": 3600.0,
    "options": {"expires": 3600.0},
}

# --- Internationalisation -------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Logging --------------------------------------------------------------------------------

LOG_LEVEL = env.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # One line per request to Ollama is noise at INFO.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
