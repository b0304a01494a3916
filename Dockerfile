# Multi-stage build: compile with the Rust toolchain, run on a distroless
# base that has glibc and CA certificates (rustls verifies Tencent's gateway
# with the platform's roots) and nothing else. Runs as non-root.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
COPY examples ./examples
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/groupban-operator /usr/local/bin/groupban-operator
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/groupban-operator"]
CMD ["--help"]
