"""fhir_server/auth."""
