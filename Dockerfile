# Production image: Orthanc from Debian with its plugins, filmless in a venv,
# the viewer built in a separate stage. One image, three roles (storage,
# gateway, emr), chosen by the command in docker-compose.yml.
FROM node:20-bookworm-slim AS viewer
WORKDIR /src/viewer
COPY viewer/package.json viewer/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY viewer/ ./
COPY emr/i18n/ /src/emr/i18n/
RUN npm run build

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      orthanc orthanc-dicomweb orthanc-gdcm orthanc-postgresql \
      dcmtk softhsm2 fonts-dejavu-core xmlsec1 python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY . /opt/filmless
COPY --from=viewer /src/viewer/dist /opt/filmless/viewer/dist
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir '/opt/filmless[codecs]'
ENV PATH=/opt/venv/bin:$PATH \
    FILMLESS_DATA_DIR=/data \
    TCP_NODELAY=1
RUN useradd --system --home /data --uid 990 filmless && mkdir -p /data && chown filmless /data
USER filmless
VOLUME ["/data"]
WORKDIR /data
