# docker-bastion: a minimal SSH + HTTP bastion.
#
# Build:   docker buildx bake             (docker-bake.hcl: amd64 + arm64)
#    or:   docker build -t docker-bastion .
#
# Two stages: static musl binaries built on Alpine's Rust image, then a
# plain Alpine with OpenSSH, the docker client, tini and nothing of the
# build. Plain Dockerfile syntax: the classic builder and BuildKit both
# build it. tests/e2e/Dockerfile.test mirrors the final stage on Debian for
# the offline test suite; tests/it/image.rs fails if the two drift apart.

ARG ALPINE_VERSION=3.21
ARG RUST_VERSION=1.89

FROM rust:${RUST_VERSION}-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY bin/ bin/
COPY src/ src/
# Static binaries, said explicitly. The target is named so RUSTFLAGS apply
# to the binaries only: proc-macro crates are built for the host and cannot
# be static on musl.
ENV CARGO_TERM_COLOR=never
RUN target="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --bins --target "$target" \
 && mkdir /out \
 && for b in bastion-entrypoint bastion-wrapper bastion-broker bastion-cgi bastion-keys bastion-agent-proxy bastion-monitor; do \
      install -m 0755 "target/$target/release/$b" "/out/$b" || exit 1; \
    done

FROM alpine:${ALPINE_VERSION}
ARG ALPINE_VERSION
ARG SSH_UID=1000
ARG SSH_GID=1000
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="docker-bastion" \
      org.opencontainers.image.description="A minimal SSH + HTTP bastion: one scoped capability, no shell, no Docker socket for the client" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="alpine:${ALPINE_VERSION}"

# The session user `agent`: shell /bin/sh (sshd runs ForceCommand through
# it), password field `*` (unlocked for sshd, no password can match).
# No host keys in the image: the entrypoint makes them in /etc/ssh/keys.
# `bastion`: the system account of the upstream ssh-agent and its
# filtering proxy (SPEC 13), never the session's.
RUN apk add --no-cache openssh-server openssh-keygen openssh-client docker-cli docker-cli-compose tini bash ca-certificates tzdata \
 && rm -f /etc/ssh/ssh_host_* \
 && addgroup -g "${SSH_GID}" agent \
 && adduser -D -u "${SSH_UID}" -G agent -h /home/agent -s /bin/sh agent \
 && addgroup -S bastion \
 && adduser -S -D -H -G bastion -h /nonexistent -s /sbin/nologin bastion \
 && sed -i 's/^agent:[^:]*:/agent:*:/' /etc/shadow \
 && install -d -m 0755 -o root -g root /etc/bastion /etc/bastion/users.d /run/bastion \
 && install -d -m 0700 -o root -g root /etc/ssh/keys

COPY --from=build /out/bastion-entrypoint /out/bastion-wrapper /out/bastion-broker /out/bastion-cgi /out/bastion-keys /out/bastion-agent-proxy /out/bastion-monitor /usr/local/bin/
COPY rootfs/ /
# sshd refuses an AuthorizedKeysCommand that is not root-owned or sits
# under a group/world-writable directory; COPY can carry the checkout's
# directory modes (umask 002) onto existing directories.
RUN chown root:root /usr/local/bin/bastion-* \
 && chmod 0755 /usr/local/bin/bastion-* \
 && chmod go-w / /etc /usr \
 && chmod -R go-w /usr/local /etc/bastion /etc/ssh

EXPOSE 22 8080

# Healthy while sshd listens on SSH_PORT (read from /proc/net/tcp{,6}: no
# connection, no log line) and, when HTTP credentials are set, the real HTTP
# listener answers GET /healthz (the monitor holds the port, so nothing else
# can answer there; the X-Bastion-Healthcheck header keeps it out of the log).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/bin/bash", "-c", "up() { grep -qE \"^ *[0-9]+: [0-9A-F]+:$(printf '%04X' \"$1\") [0-9A-F]+:[0-9A-F]+ 0A \" /proc/net/tcp /proc/net/tcp6; } && up \"${SSH_PORT:-22}\" && { [ -z \"${HTTP_BASIC_AUTH}${HTTP_TOKEN}${HTTP_BASIC_AUTH_FILE}${HTTP_TOKEN_FILE}\" ] || { exec 3<>\"/dev/tcp/127.0.0.1/${HTTP_PORT:-8080}\" && printf 'GET /healthz HTTP/1.1\\r\\nHost: healthcheck\\r\\nX-Bastion-Healthcheck: 1\\r\\nConnection: close\\r\\n\\r\\n' >&3 && IFS= read -r -t 4 status <&3 && [[ \"$status\" == \"HTTP/1.1 200 \"* ]]; }; }"]

ENTRYPOINT ["/sbin/tini", "-g", "--", "/usr/local/bin/bastion-entrypoint"]
