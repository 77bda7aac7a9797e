"""Machine-facing URLs: ingest, OTLP and the read API, with API keys and problem+json."""
