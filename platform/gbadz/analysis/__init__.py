"""Compute-to-data (issue #18, ADR 0022): analyses run inside the zone; only differentially
private (or, for data with no personal information, thresholded) aggregates leave, each one a
logged transfer under the same grants, rules and log as a copy."""
