"""HTTP routers: ingest, FHIR, alerts, health."""
