# syntax=docker/dockerfile:1
# recovery-bot in a container: docs/deploy.md says how to run it, compose.yaml runs two instances on PostgreSQL.
#
#   docker build -t recovery-bot .
#   docker run --rm --env-file .env recovery-bot db upgrade
#   docker run --rm --env-file .env -p 8080:8080 recovery-bot run --webhook-url https://bot.example.com/tg/hook

# --- build: the project's wheel and the wheels of everything it needs (the postgres extra: asyncpg) -----------
FROM python:3.11-slim AS build
WORKDIR /src
# Only what the package is built from (.dockerignore keeps the rest out): README.md is the package's long
# description, so the build needs it too.
COPY pyproject.toml README.md LICENSE ./
COPY bot ./bot
COPY flows ./flows
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[postgres]'

# --- runtime: those wheels installed into a clean slim image, with no compiler, pip cache or test extra -------
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The wheels are mounted for this one step only, so they never become a layer of the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels 'recovery-bot[postgres]'

# A fixed uid and gid, so that volume permissions and a platform's runAsNonRoot check do not depend on the image.
RUN groupadd --system --gid 10001 recovery \
    && useradd --system --uid 10001 --gid recovery --home-dir /app --no-create-home --shell /usr/sbin/nologin recovery \
    && mkdir -p /app/data \
    && chown -R recovery:recovery /app
WORKDIR /app
USER 10001:10001

# The webhook server of `run --webhook-url URL` (its --port defaults to 8080). With the default DATABASE_URL the
# SQLite file is /app/data/recovery.db: mount a volume there, or set DATABASE_URL to PostgreSQL.
EXPOSE 8080

# `run --webhook-url` serves GET /healthz (bot/frontends/monitoring.py): 200 once start-up is over and the webhook
# server listens, 503 while the database is unavailable. The check assumes --port 8080; in long-polling mode set
# HTTP_PORT=8080 for the same check to work (or disable it); compose.yaml disables it for the one-off `db upgrade`.
# urlopen raises on a refused connection or a non-2xx status, so python exits 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

# The image is the `recovery-bot` command: arguments after the image name are its arguments. `run` needs the
# public webhook URL, which only the operator knows, so there is no default `run` (a shell form reading a
# WEBHOOK_URL variable would hide the real command line and swallow SIGTERM unless it exec'd); without
# arguments the image prints the help.
ENTRYPOINT ["recovery-bot"]
CMD ["--help"]
