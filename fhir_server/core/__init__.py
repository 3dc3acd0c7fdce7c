"""fhir_server/core."""
