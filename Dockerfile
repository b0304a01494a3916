# The operator's image: the release binary on a distroless base that has
# glibc and CA certificates (rustls verifies Tencent's gateway and the API
# server with the platform's roots) and nothing else: no shell, no package
# manager. Runs as uid 65532, numeric so that runAsNonRoot can check it.
#   docker build -t groupban-operator:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
# The demo embeds the examples.
COPY examples ./examples
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/groupban-operator /usr/local/bin/groupban-operator
USER 65532:65532
# /metrics, /healthz and /readyz
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/groupban-operator"]
CMD ["run", "--metrics-bind-address=:8080"]
