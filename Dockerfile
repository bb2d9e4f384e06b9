# sluice and sluice-watcher in one image (the chart runs both containers from it).
#   docker build -t sluice:dev .        (or: make image)
# Build stage: Debian 12 with the -dev packages of scripts/deps.sh; runtime: Debian 12 slim with
# the shared libraries only, both binaries, a non-root user.

FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config ca-certificates \
      libuv1-dev libssl-dev libnghttp2-dev libcurl4-openssl-dev libcjson-dev libc-ares-dev \
      libyaml-dev node-llhttp libpcre2-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The two binaries only: `make` alone would also install the test tools (scripts/deps.sh) and
# build the unit tests and lesson programs, none of which the image needs.
RUN make -j"$(nproc)" build/sluice build/sluice-watcher \
 && strip build/sluice build/sluice-watcher

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libuv1 libssl3 libnghttp2-14 libcurl4 libcjson1 libc-ares2 libyaml-0-2 \
      libpcre2-8-0 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid sluice --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sluice
COPY --from=build /src/build/sluice /src/build/sluice-watcher /usr/local/bin/
USER 10001:10001
# 8080 traffic, 10254 sluice's admin API (metrics, probes), 10255 the watcher's /healthz
EXPOSE 8080 10254 10255
ENTRYPOINT []
CMD ["sluice"]
