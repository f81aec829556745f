"""Django settings for ImageActions: every knob comes from an environment variable.

The README's settings table documents each variable; code reads `django.conf.settings`.
"""

from pathlib import Path

from .env import env_bool, env_float, env_in_range, env_int, env_json, env_list, env_str, parse_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

# -- Where state lives -------------------------------------------------------------------
# Created, with the generated secret key, by the start-up step every entry point runs
# (imageactions.startup), never by importing this module.
DATA_DIR = Path(env_str("IMAGEACTIONS_DATA_DIR", str(BASE_DIR / "var"))).resolve()
SCRATCH_DIR = DATA_DIR / "scratch"
# Prometheus metrics of this host's processes (imageactions.metrics), one file set per process.
METRICS_DIR = DATA_DIR / "metrics"

DEBUG = env_bool("IMAGEACTIONS_DEBUG", False)
PRODUCTION = env_bool("IMAGEACTIONS_PRODUCTION", False)


def _secret_key() -> tuple[str, Path | None]:
    """The environment's key, or the one generated once into the data directory (and the file
    it is kept in, which the start-up step creates when it is missing).

    Production mode (IMAGEACTIONS_PRODUCTION=1) refuses to start without an explicit key.
    """
    key = env_str("IMAGEACTIONS_SECRET_KEY", "")
    if key:
        return key, None
    if PRODUCTION:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("IMAGEACTIONS_SECRET_KEY must be set when IMAGEACTIONS_PRODUCTION=1")
    key_file = DATA_DIR / "secret_key"
    return (key_file.read_text().strip() if key_file.exists() else ""), key_file


SECRET_KEY, SECRET_KEY_FILE = _secret_key()
ALLOWED_HOSTS = env_list("IMAGEACTIONS_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("IMAGEACTIONS_CSRF_TRUSTED_ORIGINS", [])

# -- HTTPS, terminated by a proxy in front of the service (production) ------------------------
# The header in which that proxy passes the client's scheme, e.g. X-Forwarded-Proto; set, a
# request it marks "https" is secure, and plain-HTTP requests are redirected to HTTPS (except
# the load balancer's probes). Only set it when the proxy always sets (or strips) the header.
PROXY_SCHEME_HEADER = env_str("IMAGEACTIONS_PROXY_SCHEME_HEADER", "")
if PROXY_SCHEME_HEADER:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + PROXY_SCHEME_HEADER.upper().replace("-", "_"), "https")
SECURE_SSL_REDIRECT = env_bool("IMAGEACTIONS_SSL_REDIRECT", PRODUCTION and bool(PROXY_SCHEME_HEADER))
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# Cookies (the admin's session and CSRF) only over HTTPS; HSTS tells browsers to use nothing else.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("IMAGEACTIONS_SECURE_COOKIES", PRODUCTION)
SECURE_HSTS_SECONDS = env_int("IMAGEACTIONS_HSTS_SECONDS", 365 * 24 * 3600 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = env_bool("IMAGEACTIONS_HSTS_PRELOAD", PRODUCTION)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "imageactions",
    *env_list("IMAGEACTIONS_ACTION_APPS", ["actions_import", "actions_export", "actions_clone", "actions_convert"]),
]

MIDDLEWARE = [
    # First: every request gets its id and its log line, redirects and errors included.
    "imageactions.middleware.RequestTelemetryMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "imageactions.urls"
WSGI_APPLICATION = "imageactions.wsgi.application"

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
            ],
        },
    },
]

# -- Database: SQLite (WAL) in the data directory unless DATABASE_URL names PostgreSQL ----
DATABASES = {
    "default": parse_database_url(
        env_str("IMAGEACTIONS_DATABASE_URL", ""), sqlite_path=DATA_DIR / "imageactions.sqlite3"
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
# Served by WhiteNoise straight from the apps (admin, Swagger UI and Redoc from the sidecar):
# the docs work offline and no collectstatic step is needed.
WHITENOISE_USE_FINDERS = True

# Request bodies other than image data stay small; image bytes are streamed, never buffered.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("IMAGEACTIONS_MAX_REQUEST_BODY", 256 * 1024)

# -- ImageAction lifecycle ---------------------------------------------------------------
ACTION_TTL = env_float("IMAGEACTIONS_ACTION_TTL", 48 * 3600)
REAPER_INTERVAL = env_float("IMAGEACTIONS_REAPER_INTERVAL", 60)
HEARTBEAT_INTERVAL = env_float("IMAGEACTIONS_HEARTBEAT_INTERVAL", max(1.0, REAPER_INTERVAL / 4))
# A queued step whose task has not started after this long is queued again (lost task).
QUEUED_TASK_TIMEOUT = env_float("IMAGEACTIONS_QUEUED_TASK_TIMEOUT", 600)
# An action that waits for uploaded data fails when none arrived within this many seconds.
DATA_WAIT_TIMEOUT = env_float("IMAGEACTIONS_DATA_WAIT_TIMEOUT", 3600)
PURGE_INTERVAL = env_float("IMAGEACTIONS_PURGE_INTERVAL", 600)
# Per-project quotas (imageactions.quotas), -1: no limit; a project's row in the admin overrides them.
QUOTA_PENDING_ACTIONS = env_int("IMAGEACTIONS_QUOTA_PENDING_ACTIONS", -1)
QUOTA_IMAGE_COUNT = env_int("IMAGEACTIONS_QUOTA_IMAGE_COUNT", -1)
QUOTA_IMAGE_SIZE = env_int("IMAGEACTIONS_QUOTA_IMAGE_SIZE", -1)  # bytes
QUOTA_IMAGE_STAGE = env_int("IMAGEACTIONS_QUOTA_IMAGE_STAGE", -1)  # bytes
# Seconds a dry run of an import waits for its source's answer and first bytes; past them it answers
# 400 timed_out, and the API thread is free again (the read is aborted).
DRY_RUN_READ_SECONDS = env_float("IMAGEACTIONS_DRY_RUN_READ_SECONDS", 10)
# GET /v2/image-actions/{id}?wait=N: the largest N, and how often a waiting request reads the status.
MAX_WAIT = env_float("IMAGEACTIONS_MAX_WAIT", 60)
WAIT_POLL_INTERVAL = env_float("IMAGEACTIONS_WAIT_POLL_INTERVAL", 0.25)
# Seconds a create's Idempotency-Key is remembered: a retry within it gets the first answer.
IDEMPOTENCY_WINDOW = env_float("IMAGEACTIONS_IDEMPOTENCY_WINDOW", 24 * 3600)
PROGRESS_WRITE_INTERVAL = env_float("IMAGEACTIONS_PROGRESS_WRITE_INTERVAL", 0.5)
# Webhooks (an action's notify_url): attempts per notification, the delay before the first retry
# (doubled before each next one), and seconds one attempt may take in all, to connect and be answered.
WEBHOOK_ATTEMPTS = max(1, env_int("IMAGEACTIONS_WEBHOOK_ATTEMPTS", 10))
WEBHOOK_RETRY_DELAY = env_float("IMAGEACTIONS_WEBHOOK_RETRY_DELAY", 30)
WEBHOOK_TIMEOUT = env_float("IMAGEACTIONS_WEBHOOK_TIMEOUT", 10)
# How many times a step whose worker died is started again before the action fails.
MAX_STEP_RESTARTS = env_int("IMAGEACTIONS_MAX_STEP_RESTARTS", 2)
# When a worker pool stops (SIGTERM to `manage.py worker`), a running step may finish within this
# many seconds; after that it is handed back to the queue at its next progress check, for another
# worker to run from the start (see docs/deploy.md, "Stopping and restarting").
STOP_GRACE = env_float("IMAGEACTIONS_STOP_GRACE", 10)

# -- Worker pools (django-q2 clusters) ---------------------------------------------------
DEFAULT_POOL = "default"
# {"import.uploading": "edge", ...}: which pool runs a step; unnamed steps run on their declared pool.
STEP_POOLS = env_json("IMAGEACTIONS_STEP_POOLS", {})
# The pool that sends webhook notifications: one of its own keeps long steps from delaying them.
WEBHOOK_POOL = env_str("IMAGEACTIONS_WEBHOOK_POOL", "") or DEFAULT_POOL
WORKER_POOLS = sorted({DEFAULT_POOL, WEBHOOK_POOL, *env_list("IMAGEACTIONS_WORKER_POOLS", []), *STEP_POOLS.values()})
LONGEST_STEP_TIMEOUT = env_int("IMAGEACTIONS_LONGEST_STEP_TIMEOUT", 6 * 3600)
# Worker processes run below the API, so that imports never starve serving: a CPU niceness
# added to theirs (0 to 19) and an I/O priority class (best-effort at its lowest level, idle,
# or "" to leave it as inherited; it counts where the disk's I/O scheduler honours it, e.g. BFQ).
WORKER_NICENESS = min(19, max(0, env_int("IMAGEACTIONS_WORKER_NICENESS", 10)))
WORKER_IO_PRIORITY = env_str("IMAGEACTIONS_WORKER_IO_PRIORITY", "best-effort").strip().lower()
if WORKER_IO_PRIORITY not in ("", "best-effort", "idle"):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"IMAGEACTIONS_WORKER_IO_PRIORITY must be best-effort, idle or empty; got {WORKER_IO_PRIORITY!r}"
    )
# A pool's django-q2 cluster (and Redis queue) is named QUEUE_PREFIX + pool, so deployments (or
# test runs) that share one Redis database never take each other's tasks.
QUEUE_PREFIX = env_str("IMAGEACTIONS_QUEUE_PREFIX", "")

BROKER_URL = env_str("IMAGEACTIONS_BROKER_URL", "")
# The ORM broker's pushers are woken when a step is queued on their host (runner.wakeup); this is
# how long one waits at most between looks at the queue: the latency of a missed wake-up, e.g.
# of a step queued on another host.
BROKER_POLL = env_in_range("IMAGEACTIONS_BROKER_POLL", 1.0, low=0.01, high=60)
Q_CLUSTER = {
    "name": QUEUE_PREFIX + DEFAULT_POOL,
    "workers": env_int("IMAGEACTIONS_WORKERS", 2),
    "timeout": LONGEST_STEP_TIMEOUT,
    # django-q2 re-delivers an unacknowledged task after `retry` seconds; the runner's own
    # claim and reaper decide what runs, so a re-delivery is harmless but must not be early.
    "retry": LONGEST_STEP_TIMEOUT + 600,
    "max_attempts": 1,
    "save_limit": -1,
    "ack_failures": True,
    "catch_up": False,
    "poll": BROKER_POLL,
    "ALT_CLUSTERS": {QUEUE_PREFIX + pool: {} for pool in WORKER_POOLS if pool != DEFAULT_POOL},
}
if BROKER_URL:
    Q_CLUSTER["redis"] = BROKER_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["broker_class"] = "imageactions.runner.wakeup.WakeableORM"
    # Where clusters publish their status (imageactions.health reads it): shared by the
    # processes of this host; the Redis broker keeps it in Redis instead.
    Q_CLUSTER["cache"] = "broker-stats"

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "broker-stats": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(DATA_DIR / "broker-stats"),
    },
    # Request-rate counters (imageactions.api.throttling): in Redis when the broker is Redis, so
    # every API process and host counts against one allowance; else per API process.
    "throttle": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": BROKER_URL,
        "KEY_PREFIX": QUEUE_PREFIX,
    }
    if BROKER_URL.startswith(("redis://", "rediss://"))
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "throttle"},
}

# -- Images and stores -------------------------------------------------------------------
# {"NAME": {"type": "filesystem", "path": ..., "region": ...} | {"type": "s3", "bucket": ...,
#  "endpoint_url": ..., "access_key": ..., "secret_key": ..., "region_name": ...,
#  "addressing_style": "path"|"virtual", "region": ...}}
IMAGE_STORES = env_json(
    "IMAGEACTIONS_STORES",
    {"local": {"type": "filesystem", "path": str(DATA_DIR / "images"), "region": "local"}},
)
# Extra S3 keys: prefix, multipart_threshold, multipart_chunksize (>= 5 MiB), connect_timeout,
# read_timeout, max_attempts.
DEFAULT_IMAGE_STORE = env_str("IMAGEACTIONS_DEFAULT_STORE", next(iter(IMAGE_STORES)))

# Where actions keep their bytes between steps when the worker pools share no filesystem: an S3
# bucket, defined like an "s3" entry of IMAGE_STORES plus an optional "prefix" (default
# "staging/"); an action's objects are <prefix><action id>/staged, .../converted. Unset or empty:
# each worker's DATA_DIR/scratch/<action id>/ (every pool then needs one shared scratch filesystem).
STAGING_STORE = env_json("IMAGEACTIONS_STAGING_STORE", None) or None
if STAGING_STORE is not None:
    from django.core.exceptions import ImproperlyConfigured

    # The value holds credentials: the message says what is wrong without quoting it.
    if not isinstance(STAGING_STORE, dict):
        _wrong = f"got a JSON {type(STAGING_STORE).__name__}"
    elif STAGING_STORE.get("type") != "s3":
        _wrong = f"its type is {STAGING_STORE.get('type')!r}"
    elif not STAGING_STORE.get("bucket"):
        _wrong = "it has no 'bucket'"
    else:
        _wrong = ""
    if _wrong:
        raise ImproperlyConfigured(
            'IMAGEACTIONS_STAGING_STORE must be a JSON object defining an S3 store ({"type": "s3", "bucket": ..., '
            f'"endpoint_url": ..., "access_key": ..., "secret_key": ..., "prefix": ...}}): {_wrong}'
        )

# {"host:port": {"auth_url": ..., "user": ..., "key": ..., "timeout": ...}} for swift:// sources.
SWIFT_CREDENTIALS = env_json("IMAGEACTIONS_SWIFT_CREDENTIALS", {})

# -- URL policy for sources and destinations --------------------------------------------
URL_ALLOWED_SCHEMES = env_list("IMAGEACTIONS_URL_ALLOWED_SCHEMES", ["http", "https"])
URL_ALLOWED_HOSTS = env_list("IMAGEACTIONS_URL_ALLOWED_HOSTS", [])  # empty: any public host
URL_ALLOWED_PORTS = [int(p) for p in env_list("IMAGEACTIONS_URL_ALLOWED_PORTS", [])]  # empty: any
# CIDRs that are allowed although private/loopback (tests allowlist 127.0.0.0/8 here).
URL_ALLOWED_NETWORKS = env_list("IMAGEACTIONS_URL_ALLOWED_NETWORKS", [])

# -- Import sources ----------------------------------------------------------------------
IMAGE_MAX_SIZE = env_int("IMAGEACTIONS_IMAGE_MAX_SIZE", 100 * 1024**3)  # bytes, per image
HTTP_CONNECT_TIMEOUT = env_float("IMAGEACTIONS_HTTP_CONNECT_TIMEOUT", 10)
HTTP_READ_TIMEOUT = env_float("IMAGEACTIONS_HTTP_READ_TIMEOUT", 60)  # seconds without a byte
HTTP_MAX_REDIRECTS = env_int("IMAGEACTIONS_HTTP_MAX_REDIRECTS", 5)
# A download whose connection closes mid-body continues with `Range: bytes=N-` this many times
# (when the server announces Accept-Ranges and a validator); 0: never resume.
HTTP_MAX_RESUMES = env_int("IMAGEACTIONS_HTTP_MAX_RESUMES", 3)
# An import source of at least FETCH_PARALLEL_THRESHOLD bytes that serves ranges (http(s) with
# Accept-Ranges and a validator, s3://, swift://) is read over FETCH_CONNECTIONS connections, in
# parts of FETCH_PART_SIZE bytes; at most connections x part size bytes wait in memory to be
# hashed in order. A part that breaks is resumed HTTP_MAX_RESUMES times. 1 connection: one stream.
FETCH_CONNECTIONS = env_in_range("IMAGEACTIONS_FETCH_CONNECTIONS", 4, low=1, high=32)
FETCH_PARALLEL_THRESHOLD = env_in_range("IMAGEACTIONS_FETCH_PARALLEL_THRESHOLD", 64 * 1024**2, low=0)
FETCH_PART_SIZE = env_in_range("IMAGEACTIONS_FETCH_PART_SIZE", 8 * 1024**2, low=1024**2, high=256 * 1024**2)
# Where s3:// import locations are read: {"endpoint_url": ..., "access_key": ..., "secret_key": ...,
#  "region_name": ..., "addressing_style": "path"}; empty: s3:// locations are refused.
S3_SOURCE = env_json("IMAGEACTIONS_S3_SOURCE", {})

# -- Quality control of imported images (inspection, decompression, conversion) ------------
# Guest-visible size cap, in bytes; 0: no cap.
IMAGE_MAX_VIRTUAL_SIZE = env_int("IMAGEACTIONS_IMAGE_MAX_VIRTUAL_SIZE", 1024**4) or None
IMAGE_ALLOWED_FORMATS = env_list(
    "IMAGEACTIONS_IMAGE_ALLOWED_FORMATS", ["raw", "qcow2", "vmdk", "vpc", "vhdx", "vdi", "iso"]
)
# Dotted paths of checks run on each inspected image (see imageactions/formats/verifiers.py).
IMAGE_VERIFIERS = env_list(
    "IMAGEACTIONS_IMAGE_VERIFIERS",
    ["imageactions.formats.verifiers.max_virtual_size", "imageactions.formats.verifiers.allowed_formats"],
)
# The format images are stored in: "" keeps the uploaded format, or "raw" or "qcow2".
IMAGE_STORE_FORMAT = env_str("IMAGEACTIONS_IMAGE_STORE_FORMAT", "").strip().lower()
if IMAGE_STORE_FORMAT not in ("", "raw", "qcow2"):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"IMAGEACTIONS_IMAGE_STORE_FORMAT must be empty, raw or qcow2; got {IMAGE_STORE_FORMAT!r}"
    )
# Blocks of zeros in image files (staged, converted, in filesystem stores) are left as holes:
# a mostly empty disk then costs neither the writes nor the space. False: every byte is written.
SPARSE_IMAGES = env_bool("IMAGEACTIONS_SPARSE_IMAGES", True)
DECOMPRESS_IMPORTS = env_bool("IMAGEACTIONS_DECOMPRESS_IMPORTS", True)
DECOMPRESS_MAX_OUTPUT = env_int("IMAGEACTIONS_DECOMPRESS_MAX_OUTPUT", IMAGE_MAX_SIZE)  # bytes
# A mostly empty raw disk compresses ~30000x with zstd; the output cap is the real guard.
DECOMPRESS_MAX_RATIO = env_float("IMAGEACTIONS_DECOMPRESS_MAX_RATIO", 100000)

# PUT /v2/images/{id}/file answers once the image is verified and stored, or after this many
# seconds (then the image shows its status as the import goes on).
IMAGE_UPLOAD_WAIT = env_float("IMAGEACTIONS_IMAGE_UPLOAD_WAIT", 600)

# -- Disk-format conversion (qemu-img, on inspected images only) --------------------------
# Limits for one qemu-img run; Glance's image conversion uses the same kind of caps.
QEMU_TIMEOUT = env_float("IMAGEACTIONS_QEMU_TIMEOUT", 3 * 3600)  # seconds of wall time
QEMU_MAX_MEMORY = env_int("IMAGEACTIONS_QEMU_MAX_MEMORY", 2 * 1024**3)  # bytes of address space
QEMU_MAX_CPU_SECONDS = env_int("IMAGEACTIONS_QEMU_MAX_CPU_SECONDS", 3 * 3600)

# -- Keystone (off while KEYSTONE_URL is empty: X-Auth-Token then takes this service's own tokens)
# The identity API, e.g. http://keystone.example.org:5000/v3; set, it validates X-Auth-Token.
KEYSTONE_URL = env_str("IMAGEACTIONS_KEYSTONE_URL", "").rstrip("/")
# The service user that validates tokens (it needs the `service` role, or `admin`, in its project).
KEYSTONE_USER = env_str("IMAGEACTIONS_KEYSTONE_USER", "imageactions")
KEYSTONE_PASSWORD = env_str("IMAGEACTIONS_KEYSTONE_PASSWORD", "")
KEYSTONE_PROJECT = env_str("IMAGEACTIONS_KEYSTONE_PROJECT", "service")
KEYSTONE_USER_DOMAIN = env_str("IMAGEACTIONS_KEYSTONE_USER_DOMAIN", "Default")
KEYSTONE_PROJECT_DOMAIN = env_str("IMAGEACTIONS_KEYSTONE_PROJECT_DOMAIN", "Default")
# Seconds a validated token is trusted without asking Keystone again: also how long a revoked
# token may still be accepted. Per process, unless KEYSTONE_MEMCACHED_SERVERS share one cache.
KEYSTONE_CACHE_TIME = env_int("IMAGEACTIONS_KEYSTONE_CACHE_TIME", 300)
KEYSTONE_MEMCACHED_SERVERS = env_list("IMAGEACTIONS_KEYSTONE_MEMCACHED_SERVERS", [])
# A JSON file of {"rule": ["role", ...]} that replaces those rules of imageactions.policy's defaults.
POLICY_FILE = env_str("IMAGEACTIONS_POLICY_FILE", "")

# -- Monitoring ------------------------------------------------------------------------------
# A secret a Prometheus scraper sends as `Authorization: Bearer ...` to read /metrics (and
# `manage.py serve_metrics`); empty: only callers the `metrics` policy rule allows (admins).
METRICS_TOKEN = env_str("IMAGEACTIONS_METRICS_TOKEN", "")

# -- REST framework ----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "imageactions.api.authentication.ApiTokenAuthentication",
        # X-Auth-Token: Keystone's token when Keystone is configured, else this service's own.
        "imageactions.api.authentication.KeystoneAuthentication"
        if KEYSTONE_URL
        else "imageactions.api.authentication.OpenStackTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["imageactions.api.permissions.RolePolicy"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "imageactions.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "imageactions.api.throttling.PerUserRateThrottle",
        "imageactions.api.throttling.ProjectRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_str("IMAGEACTIONS_API_RATE", "6000/min"),
        "project": env_str("IMAGEACTIONS_PROJECT_API_RATE", "20000/min"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "ImageActions API",
    "DESCRIPTION": "Import, export and clone VM disk images as tracked, asynchronous actions.",
    "VERSION": "2",
    # 3.1 is JSON Schema: it can state rules 3.0 cannot (e.g. what a label's key may be).
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Operations are tagged by the segment after /v2 (image-actions, images, ...); the probes at
    # the root (/healthz, /readyz) would otherwise make "v2" the tag of every API operation.
    "SCHEMA_PATH_PREFIX": r"/v2",
    "PREPROCESSING_HOOKS": ["imageactions.api.schema.document_paths_without_trailing_slash"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "imageactions.api.schema.state_every_rule",
    ],
    # Every action type that converts offers the same formats: one enum, not one per input.
    "ENUM_NAME_OVERRIDES": {"ConversionFormatEnum": "imageactions.pipeline.CONVERSION_FORMATS"},
}

# One line per record on standard error, as JSON (imageactions.logs.JsonFormatter) or, with
# IMAGEACTIONS_LOG_FORMAT=text, as text; either way with the request and action they are about.
LOG_FORMAT = env_str("IMAGEACTIONS_LOG_FORMAT", "json").strip().lower()
if LOG_FORMAT not in ("json", "text"):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"IMAGEACTIONS_LOG_FORMAT must be json or text; got {LOG_FORMAT!r}")
LOG_LEVEL = env_str("IMAGEACTIONS_LOG_LEVEL", "INFO").upper()
_OWN_HANDLER = {"handlers": ["console"], "propagate": False, "level": LOG_LEVEL}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"structured": {"()": f"imageactions.logs.{LOG_FORMAT.capitalize()}Formatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Both come with handlers of their own; these replace them, so their lines are structured too.
        "django-q": _OWN_HANDLER,
        "gunicorn.error": _OWN_HANDLER,
        # gunicorn's access log: the API writes its own line per request (imageactions.middleware).
        "gunicorn.access": {"handlers": [], "propagate": False},
        # keystonemiddleware warns that the password plugin's options (username, password, ...)
        # are "not known" to it at every start; they are its auth plugin's, and they work.
        "keystonemiddleware._common.config": {"level": "ERROR"},
    },
}
