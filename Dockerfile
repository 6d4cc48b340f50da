# Moat: a static-ish release binary on a slim Debian base, running as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY sql sql
COPY migrations migrations
RUN cargo build --release --locked --bin moat

FROM debian:bookworm-slim
# ca-certificates: verified TLS to a managed PostgreSQL.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin moat \
 # The uploads directory: a named volume mounted here takes this owner and mode
 # (the root filesystem is read-only in docker-compose.yml).
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/moat/files
COPY --from=build /src/target/release/moat /usr/local/bin/moat
USER 10001:10001
WORKDIR /
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/moat"]
CMD ["serve"]
