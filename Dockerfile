# The operator's image, for users with Docker. `bash .ci/build-image` builds
# the same image without a daemon: the same root (.ci/image/assemble-root
# over the Debian packages in .ci/image/packages) and the configuration of
# this file's final stage, which it reads from here. tests/image.rs holds
# the two together.
#
# The root is what distroless's cc-debian12 is made of: glibc, the GCC
# runtime and the CA bundle (rustls verifies Tencent's gateway with the
# platform's roots), a nonroot user 65532, no shell, no package manager.
#
#   docker build -t groupban-operator:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg SOURCE=$(git remote get-url origin) \
#     --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) \
#     --build-arg CREATED=$(date -u -d @$(git log -1 --format=%ct) +%Y-%m-%dT%H:%M:%SZ) .
#
# The build stage's toolchain (rust:1.95) and the Debian packages of the
# day decide the bytes; the daemonless build uses the host's.
FROM rust:1.95-bookworm AS build
RUN cargo install --locked cargo-auditable --version 0.7.7
WORKDIR /build
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The demo embeds the examples.
COPY examples ./examples
# The dependency list goes into the binary (cargo auditable); the build's
# paths do not (the daemonless build maps its own the same way).
RUN RUSTFLAGS="--remap-path-prefix=/build=/build --remap-path-prefix=/usr/local/cargo=/cargo" \
    cargo auditable build --release --locked \
    && strip --strip-all -o /groupban-operator target/release/groupban-operator \
    && objdump -h /groupban-operator | grep -q '\.dep-v0'

FROM debian:bookworm AS root
ARG SOURCE_DATE_EPOCH=0
COPY .ci/image/ /image/
COPY --from=build /groupban-operator /groupban-operator
RUN apt-get update \
    && mkdir /debs && cd /debs \
    && apt-get download $(grep -v '^#' /image/packages) \
    && SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH bash /image/assemble-root /debs /groupban-operator /rootfs

FROM scratch
COPY --from=root /rootfs/ /
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.title="groupban-operator" \
      org.opencontainers.image.description="Kubernetes operator that unbans Tencent Cloud IM audio-video group members declared in GroupBanPolicy resources" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.created="${CREATED}"
# The image's own CA bundle; a private CA is added by mounting it in a
# directory named by SSL_CERT_DIR (see the README).
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# Numeric, so that the chart's runAsNonRoot can check it.
USER 65532:65532
# /metrics, /healthz and /readyz
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/groupban-operator"]
CMD ["run", "--metrics-bind-address=:8080"]
