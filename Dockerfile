# syntax=docker/dockerfile:1
# Build stage: wheels into a virtualenv, nothing of the toolchain reaches the image.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /venv
# Runtime dependencies only: tests, bench and lint tools (requirements-dev.txt) stay out.
COPY requirements.txt /tmp/requirements.txt
RUN /venv/bin/pip install -r /tmp/requirements.txt

# Runtime stage: slim, non-root, static files collected at build time.
FROM python:3.11-slim
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=emergence.settings LOG_FORMAT=json
RUN useradd --create-home --uid 10001 emergence
COPY --from=build /venv /venv
WORKDIR /app
COPY --chown=emergence:emergence . /app
# collectstatic needs settings, not secrets: a throwaway key for this step only
# (32 bytes at least: the settings refuse a shorter one as the JWT key).
RUN SECRET_KEY=collectstatic-only-throwaway-key-0123456789 \
    python manage.py collectstatic --noinput -v0 \
    && chown -R emergence:emergence /app/staticfiles
USER emergence
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/health/liveness', timeout=2); sys.exit(0)"]
# Migrations run as a one-off, under a lock (two deploys at once are safe):
#   docker run IMAGE python manage.py migrate_locked --noinput
# DJANGO_SETTINGS_MODULE above keeps manage.py off its local development default.
# Daphne through emergence.server: its access log becomes JSON records like the rest.
# Exec form: python is PID 1 and gets SIGTERM itself (the 1012 drain).
# Behind a proxy that sets X-Forwarded-For/-Proto, add --proxy-headers (compose does).
CMD ["python", "-m", "emergence.server", "-b", "0.0.0.0", "-p", "8000", \
     "--ping-interval", "20", "--ping-timeout", "60", \
     "--application-close-timeout", "15", "--websocket_connect_timeout", "15", \
     "emergence.asgi:application"]
