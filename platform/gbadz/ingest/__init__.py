"""Ingestion steps run by the Airflow DAGs: land, validate, protect, publish, register."""
