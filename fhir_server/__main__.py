"""``python -m fhir_server`` is the ``sdoh-fhir`` command."""

from fhir_server.cli import app

app()
