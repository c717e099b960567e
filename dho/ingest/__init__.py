"""Ingestion: transports and the pipeline stages, one module per stage."""
