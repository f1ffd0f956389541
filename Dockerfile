# syntax=docker/dockerfile:1
# voicecache container image (README "Deployment"):
#   docker build -t voicecache:0.1.0 .
#   docker run -p 8080:8080 -v voicecache-data:/var/lib/voicecache voicecache:0.1.0
# The server listens on 0.0.0.0 and so needs API keys (`voicecache keys add`, or a keys file
# named by VOICECACHE_KEYS_FILE), or VOICECACHE_ALLOW_ANONYMOUS=1 to opt into an open API.

# -- builder: a wheel of voicecache, installed with its runtime dependencies into /opt/venv ----
FROM python:3.11.14-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
# Only what the wheel is made of (.dockerignore keeps everything else out of the context).
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# Every runtime dependency ships as a manylinux wheel that bundles its native libraries
# (libespeak-ng and its voice data in espeakng-loader, libsndfile with FLAC/Vorbis/Opus/MP3 in
# soundfile, OpenSSL in cryptography, OpenBLAS in numpy): no compiler and no apt packages.
# The project is installed without extras: no test, lint or benchmark tools.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install /wheels/voicecache-*.whl \
 && /opt/venv/bin/voicecache --help > /dev/null

# -- runtime: the slim base image plus the venv; runs as an unprivileged user -----------------
FROM python:3.11.14-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="voicecache" \
      org.opencontainers.image.description="A caching gateway for text-to-speech" \
      org.opencontainers.image.licenses="GPL-3.0-or-later"
# The shared libraries the wheels link against beyond their own (libc, libm, libstdc++,
# libgcc_s, zlib) are part of the Debian base image: no apt-get here.
RUN groupadd --system --gid 10001 voicecache \
 && useradd --system --uid 10001 --gid voicecache --no-create-home \
      --home-dir /var/lib/voicecache --shell /usr/sbin/nologin voicecache \
 && install -d -o voicecache -g voicecache -m 0750 /var/lib/voicecache
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VOICECACHE_HOST=0.0.0.0 \
    VOICECACHE_PORT=8080 \
    VOICECACHE_DATA_DIR=/var/lib/voicecache
# Disk tier, API keys (default keys file), uploaded voices, purge feed and audit log.
VOLUME ["/var/lib/voicecache"]
WORKDIR /var/lib/voicecache
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8080
# /healthz needs no API key. Slim images have no curl: the standard library does it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('VOICECACHE_PORT', '8080') + '/healthz', timeout=4)"]
# `docker run IMAGE keys add …`, `… doctor` and the other commands work too.
ENTRYPOINT ["voicecache"]
CMD ["serve"]
