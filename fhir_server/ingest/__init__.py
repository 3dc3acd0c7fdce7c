"""fhir_server/ingest."""
