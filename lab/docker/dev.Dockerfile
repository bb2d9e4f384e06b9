# The developer station (pingora_dev): Debian 12 with everything scripts/deps.sh
# installs to build, test and run sluice, plus the lab's client tools. The
# repository is mounted at /app; run as uid 1000 as in the guide.
FROM debian:bookworm-slim
COPY scripts/deps.sh /tmp/deps.sh
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates curl nghttp2-client netcat-openbsd iproute2 procps bash make \
 && sh /tmp/deps.sh \
 && rm -rf /var/lib/apt/lists/* /tmp/deps.sh
ENV LAB_GEN_DIR=/tmp/lab-gen
WORKDIR /app
