# syntax=docker/dockerfile:1
# Build: a static-ish release binary (rustls + ring, no OpenSSL), then a distroless runtime.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY src src
COPY benches benches
COPY tests tests
COPY config config
RUN cargo build --release --locked --bin regkeeper \
 && install -D target/release/regkeeper /out/regkeeper \
 && install -d -o 65532 -g 65532 /out/var/lib/regkeeper

# distroless/cc: glibc and CA certificates, nothing else; runs as the non-root user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/regkeeper /usr/local/bin/regkeeper
COPY --from=build --chown=65532:65532 /out/var/lib/regkeeper /var/lib/regkeeper
COPY config/regkeeper.yaml /etc/regkeeper/regkeeper.yaml
USER 65532:65532
# In a container, listen on all interfaces and keep the index on the volume.
ENV REGKEEPER_LISTEN=0.0.0.0:5050 \
    REGKEEPER_ADMIN_LISTEN=0.0.0.0:9090 \
    REGKEEPER_INDEX_PATH=/var/lib/regkeeper/index \
    REGKEEPER_LOG_FORMAT=json
VOLUME ["/var/lib/regkeeper"]
EXPOSE 5050 9090
ENTRYPOINT ["/usr/local/bin/regkeeper"]
CMD ["serve", "--config", "/etc/regkeeper/regkeeper.yaml"]
