"""fhir_server/audit."""
