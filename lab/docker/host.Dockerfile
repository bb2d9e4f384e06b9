# The lab's small hosts in lab/compose.yaml: blue, green (http_echo.py), grpc
# (grpc_server.py), dns (dnsmasq) and the two clients (curl, nghttp, nc).
# The same Debian packages as `make lab` uses, so the answers are the same.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-grpcio python3-grpc-tools python3-protobuf \
      dnsmasq-base curl nghttp2-client netcat-openbsd openssl ca-certificates \
      iproute2 iputils-ping procps bash \
 && rm -rf /var/lib/apt/lists/*
COPY lab/hosts /lab/hosts
# Generated gRPC code goes to a writable place (labproto.py compiles on first use).
ENV LAB_GEN_DIR=/tmp/lab-gen
WORKDIR /lab/hosts
