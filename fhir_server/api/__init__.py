"""fhir_server/api."""
