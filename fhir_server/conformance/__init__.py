"""What resources must look like and what codes mean: profiles and terminology on the write path.

``Conformance`` holds this process's profiles and terminology (the bundled ones with those posted
to the server) and the operator's policy (``Settings.unknown_profiles``,
``Settings.required_profiles``). The repository asks it to check every write; ``$validate`` and the
terminology operations ask it too.
"""

from fhir_server.conformance.policy import (
    UNKNOWN_PROFILE_MODES,
    Conformance,
    RequiredProfile,
    parse_required_profiles,
)

__all__ = ["UNKNOWN_PROFILE_MODES", "Conformance", "RequiredProfile", "parse_required_profiles"]
