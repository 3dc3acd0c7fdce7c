"""Reading request bodies: any input gives a resource or our own error, never anything else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.api.formats import read_body
from fhir_server.core.errors import FhirError
from profiles.models import ResourceInvalid, validate_resource

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=200),
    st.sampled_from(["application/fhir+json", "application/fhir+xml", "text/plain", None]),
)
def test_arbitrary_bytes(raw: bytes, content_type: str | None) -> None:
    try:
        assert isinstance(read_body(content_type, raw), dict)
    except FhirError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "resourceType",
                "id",
                "name",
                "birthDate",
                "gender",
                "meta",
                "extension",
                "_birthDate",
                "telecom",
                "x",
            ]
        ),
        _json,
        max_size=5,
    )
)
def test_arbitrary_patients_validate_or_say_why(data: dict[str, object]) -> None:
    data["resourceType"] = "Patient"
    try:
        validate_resource(data)
    except ResourceInvalid as exc:
        assert exc.issues and all(i.expression.startswith("Patient") for i in exc.issues)
