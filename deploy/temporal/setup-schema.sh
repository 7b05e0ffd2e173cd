#!/bin/sh
# One-shot: creates the `temporal` and `temporal_visibility` databases and brings their schemas up
# to the server version (temporalio/admin-tools). Safe to run again: existing databases are kept.
set -eu

sql() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" \
    -u "$POSTGRES_USER" --pw "$POSTGRES_PWD" "$@"
}

# A database created now gets the base schema; one kept from an earlier run only updates.
for db in temporal temporal_visibility; do
  if sql --db "$db" create; then
    sql --db "$db" setup-schema -v 0.0
  else
    echo "database $db exists"
  fi
done
sql --db temporal update-schema -d /etc/temporal/schema/postgresql/v12/temporal/versioned
sql --db temporal_visibility update-schema -d /etc/temporal/schema/postgresql/v12/visibility/versioned
echo "Temporal schemas are up to date"
