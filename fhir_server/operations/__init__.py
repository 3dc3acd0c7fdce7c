"""fhir_server/operations."""
