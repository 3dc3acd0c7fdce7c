"""fhir_server/search."""
