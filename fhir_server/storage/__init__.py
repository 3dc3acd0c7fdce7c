"""fhir_server/storage."""
