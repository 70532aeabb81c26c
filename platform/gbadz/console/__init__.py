"""The web console: server-rendered pages for providers, startups and compliance officers."""
