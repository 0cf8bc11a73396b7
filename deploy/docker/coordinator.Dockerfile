# coordinator.Dockerfile — the fedkd coordinator (`fedkd serve`) on Debian 12.
# Build from the repository root:
#   docker build -f deploy/docker/coordinator.Dockerfile -t fedkd-coordinator:0.1.0 .
# Run (config, keys and allow-list in ./etc, with metrics_listen =
# 0.0.0.0:9465 so /metrics is reachable from outside; checkpoints in a volume):
#   docker run -d -p 7878:7878 -p 9465:9465 -v "$PWD/etc:/etc/fedkd:ro" \
#     -v fedkd-state:/var/lib/fedkd fedkd-coordinator:0.1.0
# Stage 1 compiles with the -dev packages; stage 2 carries only the
# executable and the shared libraries it loads.

FROM debian:12-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
      libzmq3-dev libmsgpack-dev libsodium-dev libblis-dev libmicrohttpd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DFKD_BUILD_TESTS=OFF \
 && cmake --build /build -j"$(nproc)" --target fedkd \
 && install -D -m 0755 /build/fedkd /out/usr/local/bin/fedkd

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libzmq5 libmsgpackc2 libsodium23 libblis4-openmp libgomp1 libmicrohttpd12 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/fedkd --shell /usr/sbin/nologin fedkd \
 && install -d -o fedkd -g fedkd -m 0700 /var/lib/fedkd \
 && install -d -m 0755 /etc/fedkd
COPY --from=build /out/ /
USER 10001:10001
WORKDIR /var/lib/fedkd
VOLUME ["/var/lib/fedkd"]
# 7878: clients (ZeroMQ CURVE), 9465: /metrics and /healthz (HTTP)
EXPOSE 7878 9465
ENTRYPOINT ["/usr/local/bin/fedkd", "serve"]
CMD ["--config", "/etc/fedkd/coordinator.conf"]
