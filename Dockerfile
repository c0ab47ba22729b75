# keel's container image: `docker build -t keel:0.1.0 .` (or podman/buildah).
# Build stage: the release build (scripts/release.sh: the `dist` profile, stripped, with LTO).
# Runtime stage: Debian slim, keel only, as a non-root user; data in the /var/lib/keel
# volume; every setting from KEEL_<FLAG> (or etcd's ETCD_<FLAG>) environment variables.
ARG RUST_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG KEEL_BUILD_COMMIT=""
ARG KEEL_BUILD_DATE=""
RUN KEEL_BUILD_COMMIT="${KEEL_BUILD_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || true)}" \
    KEEL_BUILD_DATE="${KEEL_BUILD_DATE:-$(date -u +%Y-%m-%dT%H:%M:%SZ)}" \
    cargo build --locked --profile dist -p keel-net --bin keel \
    && cp target/dist/keel /usr/local/bin/keel

FROM ${RUNTIME_IMAGE}
RUN groupadd --system --gid 10001 keel \
    && useradd --system --uid 10001 --gid keel --home-dir /var/lib/keel --shell /usr/sbin/nologin keel \
    && mkdir -p /var/lib/keel && chown keel:keel /var/lib/keel && chmod 0700 /var/lib/keel
COPY --from=build /usr/local/bin/keel /usr/local/bin/keel
USER keel:keel
WORKDIR /var/lib/keel
VOLUME /var/lib/keel
# A single member by default, reachable from outside the container; a cluster sets the
# URLs, name and --initial-cluster through the environment (see deploy/kubernetes).
ENV KEEL_DATA_DIR=/var/lib/keel/default.keel \
    KEEL_LISTEN_CLIENT_URLS=http://0.0.0.0:2379 \
    KEEL_ADVERTISE_CLIENT_URLS=http://127.0.0.1:2379 \
    KEEL_LISTEN_PEER_URLS=http://0.0.0.0:2380
EXPOSE 2379 2380
ENTRYPOINT ["keel"]
