"""Compliance: year-to-date counters, transfer reports, expiring mechanisms and parties."""
