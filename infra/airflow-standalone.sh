#!/usr/bin/env bash
# Run gbadz's DAGs under a real Airflow 3 (scheduler + API server) on loopback.
#
#   infra/airflow-standalone.sh            # uses .gbadz/ (embedded services must be up)
#
# gbadz settings reach the task code through GBADZ_* variables (see README); the embedded
# S3 server and SQLite database are used when none are set. Stop with Ctrl-C (SIGINT):
# SIGTERM would orphan Airflow's children.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export PATH="$PWD/$VENV/bin:$PATH"              # airflow standalone needs the venv's bin on PATH
export AIRFLOW_HOME="${AIRFLOW_HOME:-$PWD/.gbadz/airflow-standalone}"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"
export AIRFLOW__API__PORT="${AIRFLOW__API__PORT:-8080}"
export GBADZ_HOME="${GBADZ_HOME:-$PWD/.gbadz}"
gbadz services up
exec airflow standalone
