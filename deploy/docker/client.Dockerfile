# client.Dockerfile — the fedkd client agent (`fedkd-client`) on Debian 12.
# Build from the repository root:
#   docker build -f deploy/docker/client.Dockerfile -t fedkd-client:0.1.0 .
# Run (config and keys in ./etc, private text in ./data, read-only):
#   docker run -d -v "$PWD/etc:/etc/fedkd:ro" -v "$PWD/data:/data:ro" \
#     -v fedkd-client-state:/var/lib/fedkd-client fedkd-client:0.1.0
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
 && cmake --build /build -j"$(nproc)" --target fedkd-client \
 && install -D -m 0755 /build/fedkd-client /out/usr/local/bin/fedkd-client

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libzmq5 libmsgpackc2 libsodium23 libblis4-openmp libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/fedkd-client --shell /usr/sbin/nologin fedkd \
 && install -d -o fedkd -g fedkd -m 0700 /var/lib/fedkd-client \
 && install -d -m 0755 /etc/fedkd /data
COPY --from=build /out/ /
USER 10001:10001
WORKDIR /var/lib/fedkd-client
VOLUME ["/var/lib/fedkd-client"]
ENTRYPOINT ["/usr/local/bin/fedkd-client"]
CMD ["--config", "/etc/fedkd/client.conf"]
