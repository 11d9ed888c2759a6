# syntax=docker/dockerfile:1
# One small image with both programs, strangler-proxy and datasync, running as
# a non-root user. Build: docker build -t strangler:dev .
# Run:   docker run --rm strangler:dev strangler-proxy --help
#        docker run --rm strangler:dev datasync --help

# Build stage: the Go toolchain, the module cache, static binaries.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/strangler-proxy ./cmd/strangler-proxy && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/datasync ./cmd/datasync

# Run stage: no shell, no package manager, CA certificates and tzdata only,
# user 65532 (nonroot).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/strangler-proxy /usr/local/bin/strangler-proxy
COPY --from=build /out/datasync /usr/local/bin/datasync
USER 65532:65532
# 8080: the proxy's listener; 9901: its admin listener (/healthz, /readyz,
# /metrics, the status page); 9187: datasync sync --metrics-addr.
EXPOSE 8080 9901 9187
ENTRYPOINT ["/usr/local/bin/strangler-proxy"]
CMD ["serve", "--config", "/etc/strangler/strangler.yaml"]
