"""Device identifiers in one spelling, however a format writes them.

An EUI-64 system id is 16 hex digits: PHD FHIR writes `00-1C-05-FF-FE-01-00-01`, HL7 v2
OBX-18 `001C05FFFE010001`, RFC 9039 `urn:dev:mac:001c05fffe010001`. They are all
stored and matched as `00-1C-05-FF-FE-01-00-01` under the EUI-64 system.
"""

from __future__ import annotations

import re

from dho.ingest.measurement import EUI64_SYSTEM

EUI48_BLUETOOTH_SYSTEM = "http://hl7.org/fhir/sid/eui-48/bluetooth"
_DEV_MAC = "urn:dev:mac:"
_SEPARATORS = re.compile(r"[-:.\s]")
_HEX = re.compile(r"[0-9A-Fa-f]+")


def canonical_device(system: str, value: str) -> tuple[str, str]:
    """(system, value) with EUI-64 and EUI-48 values in dashed upper-case hex."""
    if value.lower().startswith(_DEV_MAC):
        digits = _SEPARATORS.sub("", value[len(_DEV_MAC) :])
        if _HEX.fullmatch(digits) and len(digits) in (12, 16):
            system = EUI64_SYSTEM if len(digits) == 16 else EUI48_BLUETOOTH_SYSTEM
            return system, _dashed(digits)
    if system in (EUI64_SYSTEM, EUI48_BLUETOOTH_SYSTEM):
        digits = _SEPARATORS.sub("", value)
        wanted = 16 if system == EUI64_SYSTEM else 12
        if _HEX.fullmatch(digits) and len(digits) == wanted:
            return system, _dashed(digits)
    return system, value


def _dashed(digits: str) -> str:
    upper = digits.upper()
    return "-".join(upper[i : i + 2] for i in range(0, len(upper), 2))
