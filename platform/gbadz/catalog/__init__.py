"""The catalog: datasets, versions, quality reports, licences and search."""
