# fieldsync, one instance: `fieldsync serve` on port 5984 as an unprivileged user.
# docker-compose.yml runs two of these behind a TLS proxy on a CouchDB cluster
# (docs/deploy.md); `docker run` alone gives one instance on the embedded store.
FROM python:3.11-slim-bookworm

# libzbar0: pyzbar decodes photos of patient-ID cards with it (loaded at run time).
# openssl: deploy/make-cert.sh makes the proxy's first certificate with this image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libzbar0 openssl \
    && rm -rf /var/lib/apt/lists/*

# The dependencies and their version ranges are pyproject.toml's, as `make setup` installs them.
WORKDIR /src
COPY pyproject.toml ./
COPY sync ./sync
COPY forms ./forms
COPY sms_gateway ./sms_gateway
COPY barcode ./barcode
COPY device_registry ./device_registry
RUN pip install --no-cache-dir --no-compile . \
    && rm -rf /src

# A fixed uid, so that a secret file on the host can be made readable to it alone:
# chown 10001 secrets/master.key (docs/deploy.md).
RUN groupadd --system --gid 10001 fieldsync \
    && useradd --system --uid 10001 --gid fieldsync --home-dir /var/lib/fieldsync \
        --shell /usr/sbin/nologin fieldsync \
    && mkdir -p /var/lib/fieldsync/data \
    && chown -R fieldsync:fieldsync /var/lib/fieldsync
USER fieldsync
WORKDIR /var/lib/fieldsync

# Inside a container the server listens on every interface; publish it through a proxy.
ENV FIELDSYNC_DATA_DIR=/var/lib/fieldsync/data \
    FIELDSYNC_HOST=0.0.0.0 \
    FIELDSYNC_PORT=5984 \
    PYTHONUNBUFFERED=1
EXPOSE 5984

# /_ready: 200 once the store (and CouchDB, when configured) answers; 503 says what is not.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/_ready' % os.environ.get('FIELDSYNC_PORT', '5984'), timeout=4)"]

# Any fieldsync command runs the same way: docker compose exec fieldsync-1 fieldsync user list
ENTRYPOINT ["fieldsync"]
CMD ["serve"]
