#!/bin/sh
# Runs once, when the PostgreSQL volume is first initialised (docker-entrypoint-initdb.d): the
# campaign engine's own database and role, beside Temporal's.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v password="$CAMPAIGNS_DB_PASSWORD" <<'SQL'
CREATE ROLE campaigns LOGIN PASSWORD :'password';
CREATE DATABASE campaigns OWNER campaigns;
SQL
