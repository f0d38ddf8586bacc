#!/bin/sh
# Lets the indexer container open replication connections (pg_hba's "all" does not match them).
set -e
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
