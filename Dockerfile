# syntax=docker/dockerfile:1
# Portico: multi-stage build. The runtime image is distroless (no shell, no package
# manager) and runs as the unprivileged "nonroot" user (65532).
#
#   docker build -t portico:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/portico:TAG --push .
#   docker run --rm -v $PWD/config.yaml:/etc/portico/config.yaml:ro portico:dev run --config /etc/portico/config.yaml

FROM rust:1.95-slim-bookworm AS build
# Set by buildx per platform (linux/amd64, linux/arm64): each platform keeps its own target cache.
ARG TARGETPLATFORM
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,id=portico-target-${TARGETPLATFORM} \
    cargo build --release --locked --bin portico \
    && install -D -m 0755 target/release/portico /out/portico

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/portico /portico
USER nonroot:nonroot
# Listener ports of the chart's defaults: external http/https, internal http/https, admin.
EXPOSE 8080 8443 8081 8444 9000
ENTRYPOINT ["/portico"]
CMD ["run", "--config", "/etc/portico/config.yaml"]
