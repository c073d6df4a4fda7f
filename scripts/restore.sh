#!/usr/bin/env bash
# Restore a backup made by scripts/backup.sh into a fresh data dir and an empty database.
#
#   scripts/restore.sh BACKUP_DIR DATA_DIR [DATABASE_URL]
#
# DATABASE_URL: an existing, empty PostgreSQL database (createdb first), or none for the
# embedded SQLite database DATA_DIR/gateway.db. Then run `pacs-gateway migrate` with settings
# that name DATA_DIR and the database: it upgrades a backup from an older release.
set -euo pipefail
umask 077
if (($# < 2 || $# > 3)); then
    echo "usage: $0 BACKUP_DIR DATA_DIR [DATABASE_URL]" >&2
    exit 2
fi
backup_dir="$1"
data_dir="$2"
url="${3:-sqlite:///${data_dir%/}/gateway.db}"
(cd "$backup_dir" && sha256sum --check --quiet SHA256SUMS) || {
    echo "restore: expected the files of $backup_dir to match SHA256SUMS, found a difference" >&2
    exit 1
}
if [[ -d "$data_dir" && -n "$(ls -A "$data_dir")" ]]; then
    echo "restore: expected an empty or missing data dir, found files in $data_dir" >&2
    exit 2
fi
mkdir -p "$data_dir"

case "$url" in
    sqlite:///*)
        database="${url#sqlite:///}"
        if [[ ! -f "$backup_dir/gateway.db" ]]; then
            echo "restore: expected a SQLite backup (gateway.db) in $backup_dir, found none" >&2
            exit 2
        fi
        if [[ -e "$database" ]]; then
            echo "restore: expected no database at $database, found one" >&2
            exit 2
        fi
        mkdir -p "$(dirname "$database")"
        cp "$backup_dir/gateway.db" "$database"
        ;;
    postgresql*://*)
        libpq_url="postgresql://${url#*://}"
        if [[ ! -f "$backup_dir/database.dump" ]]; then
            echo "restore: expected a PostgreSQL backup (database.dump) in $backup_dir, found none" >&2
            exit 2
        fi
        tables=$(psql "$libpq_url" -Atc \
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
        if [[ "$tables" != 0 ]]; then
            echo "restore: expected an empty database, found $tables tables" >&2
            exit 2
        fi
        pg_restore --no-owner --no-privileges --exit-on-error --dbname="$libpq_url" \
            "$backup_dir/database.dump"
        ;;
    *)
        echo "restore: expected a sqlite:/// or postgresql:// database URL, found another" >&2
        exit 2
        ;;
esac
tar -C "$data_dir" -xf "$backup_dir/data.tar"
echo "restore: done (schema revision $(cat "$backup_dir/REVISION")); next: pacs-gateway migrate"
