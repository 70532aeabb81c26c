"""Delivery: grant-scoped copies of dataset versions, short-lived URLs, one transfer-log entry each."""
