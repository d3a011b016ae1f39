# Build stage: compile the release binary (config/default.toml and migrations are embedded).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY config config
RUN cargo build --release --locked

# Runtime stage: a small image running as an unprivileged user.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/portcullis portcullis \
 && mkdir -p /var/lib/portcullis/data /etc/portcullis \
 && chown -R portcullis:portcullis /var/lib/portcullis
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
COPY config/default.toml /etc/portcullis/default.toml
WORKDIR /var/lib/portcullis
USER portcullis
ENV PORTCULLIS__LOG__FORMAT=json
# The SQLite default and its generated master key live here; mount a volume to keep them.
VOLUME /var/lib/portcullis/data
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
