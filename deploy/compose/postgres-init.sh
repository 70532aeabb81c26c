#!/bin/sh
# Runs once, on an empty data directory (the postgres image's /docker-entrypoint-initdb.d):
# one role and one database each for gbadz and Airflow. Passwords come from the environment
# and are passed as psql variables (quoted by psql), never pasted into SQL text.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v gbadz_pw="$GBADZ_DB_PASSWORD" -v airflow_pw="$AIRFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE gbadz LOGIN PASSWORD :'gbadz_pw';
CREATE DATABASE gbadz OWNER gbadz;
CREATE ROLE airflow LOGIN PASSWORD :'airflow_pw';
CREATE DATABASE airflow OWNER airflow;
SQL
