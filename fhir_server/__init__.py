"""fhir_server."""
