#!/usr/bin/env bash
# Make the secret files deploy/compose.yaml reads: postgres_password, database_url (with
# that password and POSTGRES_PORT) and web_secret_key, in DIR (default deploy/secrets).
# Existing files are kept. The folder is 0700; the files 0644 so that the non-root users of
# the containers can read them (only through the folder's owner on this host).
set -euo pipefail
dir="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/deploy/secrets}"
mkdir -p "$dir"
chmod 0700 "$dir"
umask 022
if [[ ! -f "$dir/postgres_password" ]]; then
    python3 -c 'import secrets; print(secrets.token_urlsafe(24))' > "$dir/postgres_password"
fi
if [[ ! -f "$dir/database_url" ]]; then
    printf 'postgresql+psycopg://gateway:%s@127.0.0.1:%s/gateway\n' \
        "$(cat "$dir/postgres_password")" "${POSTGRES_PORT:-5432}" > "$dir/database_url"
fi
if [[ ! -f "$dir/web_secret_key" ]]; then
    python3 -c 'import secrets; print(secrets.token_urlsafe(48))' > "$dir/web_secret_key"
fi
chmod 0644 "$dir"/postgres_password "$dir"/database_url "$dir"/web_secret_key
echo "secrets in $dir"
