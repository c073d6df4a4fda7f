#!/usr/bin/env bash
# Back up the gateway while it runs: the database first, then the data dir.
#
#   scripts/backup.sh DATA_DIR BACKUP_DIR [DATABASE_URL]
#
# DATABASE_URL is the gateway's `database_url` setting; without it, the embedded SQLite
# database DATA_DIR/gateway.db. PostgreSQL: pg_dump in its custom format (one consistent
# snapshot). SQLite: SQLite's online backup API (what the sqlite3 shell's `.backup` does),
# never a copy of the live file, whose WAL may hold committed transactions.
# The data dir (spool, results, jobs, web-secret) goes into data.tar, without the database
# files, the embedded broker's queue and STOW-RS staging. Database first: a spool file is
# written before its row commits, so every instance in the dump has its file in the tar;
# files the tar holds beyond the dump are orphans the spool hygiene sweeps after a restore.
# BACKUP_DIR gets database.dump or gateway.db, data.tar, REVISION and SHA256SUMS; it holds
# patient data: keep it encrypted and readable by the gateway's operators only.
set -euo pipefail
umask 077
if (($# < 2 || $# > 3)); then
    echo "usage: $0 DATA_DIR BACKUP_DIR [DATABASE_URL]" >&2
    exit 2
fi
data_dir="$1"
backup_dir="$2"
url="${3:-sqlite:///${data_dir%/}/gateway.db}"
python="${PYTHON:-python3}"
if [[ ! -d "$data_dir" ]]; then
    echo "backup: expected the data dir $data_dir, found none" >&2
    exit 2
fi
mkdir -p "$backup_dir"
if [[ -n "$(ls -A "$backup_dir")" ]]; then
    echo "backup: expected an empty backup dir, found files in $backup_dir" >&2
    exit 2
fi

case "$url" in
    sqlite:///*)
        database="${url#sqlite:///}"
        if [[ ! -f "$database" ]]; then
            echo "backup: expected the SQLite database $database, found none" >&2
            exit 2
        fi
        "$python" - "$database" "$backup_dir/gateway.db" <<'PY'
import sqlite3, sys
source = sqlite3.connect(sys.argv[1], timeout=60)
target = sqlite3.connect(sys.argv[2])
with target:
    source.backup(target)  # the online backup API: a consistent copy, WAL included
revision = target.execute("SELECT version_num FROM alembic_version").fetchone()
print(revision[0] if revision else "none")
target.close()
source.close()
PY
        ;;
    postgresql*://*)
        libpq_url="postgresql://${url#*://}"  # drop SQLAlchemy's driver name (+psycopg)
        pg_dump --format=custom --no-owner --file="$backup_dir/database.dump" "$libpq_url"
        psql "$libpq_url" -Atc "SELECT version_num FROM alembic_version"
        ;;
    *)
        echo "backup: expected a sqlite:/// or postgresql:// database URL, found another" >&2
        exit 2
        ;;
esac >"$backup_dir/REVISION"

status=0
tar -C "$data_dir" -cf "$backup_dir/data.tar" \
    --exclude=./gateway.db --exclude='./gateway.db-*' --exclude=./gateway.db.writer-lock \
    --exclude='./broker.sqlite*' --exclude=./stow-incoming --exclude='*.tmp' \
    --warning=no-file-changed --warning=no-file-removed . || status=$?
if ((status > 1)); then  # 1: a file changed or went while read (a duplicate discarded)
    echo "backup: tar of $data_dir failed with status $status" >&2
    exit 1
fi
(cd "$backup_dir" && sha256sum -- * >SHA256SUMS)
echo "backup: $backup_dir (schema revision $(cat "$backup_dir/REVISION"))"
