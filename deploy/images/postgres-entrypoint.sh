#!/bin/sh
# `postgres ...` as the official image runs it: first start initialises PGDATA with
# POSTGRES_USER / POSTGRES_DB and the password from POSTGRES_PASSWORD_FILE. Other commands
# (redis-server, ...) run as given. Never as root: compose sets the user.
set -eu
if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
    pwfile="${POSTGRES_PASSWORD_FILE:?expected POSTGRES_PASSWORD_FILE, found none}"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-host=scram-sha-256 \
        --auth-local=trust --encoding=UTF8 >/dev/null
    pg_ctl -o "-c listen_addresses='' -k /run/postgresql" -w start >/dev/null
    if [ "$POSTGRES_DB" != postgres ]; then
        createdb -h /run/postgresql -U "$POSTGRES_USER" "$POSTGRES_DB"
    fi
    pg_ctl -m fast -w stop >/dev/null
fi
exec "$@"
