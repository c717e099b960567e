"""The FHIR decoder's view of resources: R4 validation, identifiers, references between entries.

Resources are checked with the `fhir.resources` R4B models (structurally equal to R4 for
Observation, Patient, Device and Bundle) but never re-serialised: values are read from the
parsed JSON, so decimals keep the precision the device sent.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, cast
from urllib.parse import unquote

from pydantic import ValidationError

from dho.catalogue import MDC
from dho.ingest.decoded import RegistryClaim
from dho.ingest.errors import Unparseable
from dho.ingest.identifiers import canonical_device
from dho.ingest.measurement import EUI64_SYSTEM
from dho.ingest.resolve import DEVICE_ID_SYSTEM, NATIONAL_ID_SYSTEMS, PATIENT_ID_SYSTEM

INVALID = "invalid-fhir"
GATEWAY_EXTENSIONS = (
    "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice",
    "http://hl7.org/fhir/StructureDefinition/device-gateway",  # R5 / PHD STU3 drafts
)
Kind = Literal["Patient", "Device"]
Identifier = tuple[str, str]

_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")
_LOCAL = re.compile(r"(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})")
_ABSOLUTE_TAIL = re.compile(r"https?://\S+/(?P<ref>[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})")
_NO_SYSTEM_ID = re.compile(r"[0\-:]+")
_OWN_SYSTEM: dict[Kind, str] = {"Patient": PATIENT_ID_SYSTEM, "Device": DEVICE_ID_SYSTEM}


@lru_cache(maxsize=1)
def _models() -> tuple[Callable[[str], type[Any]], type[Any]]:
    """The R4B model lookup and the Resource base class, imported on first use (~200 ms)."""
    package = importlib.import_module("fhir.resources.R4B")
    base = importlib.import_module("fhir.resources.R4B.resource").Resource
    return cast(Callable[[str], type[Any]], package.get_fhir_model_class), cast(type[Any], base)


def validate(data: Mapping[str, Any], model_name: str, what: str) -> None:
    """Check `data` against the R4 model `model_name`; Unparseable(invalid-fhir) if it fails."""
    model = _models()[0](model_name)
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise Unparseable(f"{what}: not valid FHIR R4: {_first_error(exc)}", code=INVALID) from exc
    except (KeyError, TypeError, ValueError) as exc:  # e.g. a contained resource of no known type
        raise Unparseable(
            f"{what}: not valid FHIR R4 ({exc.__class__.__name__})", code=INVALID
        ) from exc


def resource_type(resource: Any, what: str) -> str:
    """The resourceType of an R4 resource; Unparseable(invalid-fhir) when it names none."""
    if not isinstance(resource, dict):
        raise Unparseable(f"{what}: a resource must be a JSON object", code=INVALID)
    name = resource.get("resourceType")
    if not isinstance(name, str) or not _is_resource(name):
        shown = name[:64] if isinstance(name, str) else "missing"
        raise Unparseable(f"{what}: resourceType {shown!r} is not an R4 resource", code=INVALID)
    return name


def _is_resource(name: str) -> bool:
    if not _NAME.fullmatch(name):
        return False
    lookup, base = _models()
    try:
        return issubclass(lookup(name), base)
    except ValueError:
        return False


def _first_error(exc: ValidationError) -> str:
    """Where and what the first problem is; never the offending value (it may be patient data)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
    text = f"{where.lstrip('.')}: {first['msg'][:160]}" if where else first["msg"][:160]
    return text + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")


@dataclass(frozen=True, slots=True)
class Node:
    """One Bundle entry's resource, and the service id it names when it is a `PUT Type/<id>`."""

    resource: dict[str, Any] | None
    own_id: str | None = None


@dataclass(frozen=True, slots=True)
class Links:
    """The entries of a Bundle by the names other entries use for them (fullUrl, `Type/<id>`).

    `devices` are the entries some Observation names as its `device`; `gateways` those named
    only by the gateway extension.
    """

    nodes: tuple[Node, ...] = ()
    names: Mapping[str, int] = field(default_factory=dict)
    devices: frozenset[int] = frozenset()
    gateways: frozenset[int] = frozenset()

    def named(self, reference: str) -> Node | None:
        index = self.names.get(reference)
        return None if index is None else self.nodes[index]


def links_of(entries: Sequence[Any], ignore_codes: frozenset[str]) -> Links:
    """Every name an entry can be referred to by, and which entries Observations point to.

    An Observation the adapter reads but does not store (its MDC code is in `ignore_codes`,
    e.g. a Coincident Time Stamp, whose `device` is the gateway) names no device.
    """
    nodes = tuple(_node(entry) for entry in entries)
    names: dict[str, int] = {}
    for index, entry in enumerate(entries):
        for name in _names(entry, nodes[index]):
            names.setdefault(name, index)
    devices: set[int] = set()
    gateways: set[int] = set()
    for node in nodes:
        resource = node.resource
        if resource is None or resource.get("resourceType") != "Observation":
            continue
        if ignored_coding(resource, ignore_codes) is not None:
            continue
        device = _reference_text(resource.get("device"))
        if device in names:
            devices.add(names[device])
        gateways.update(names[r] for r in gateway_references(resource) if r in names)
    return Links(nodes, names, frozenset(devices), frozenset(gateways - devices))


def ignored_coding(
    observation: Mapping[str, Any], ignore_codes: frozenset[str]
) -> Mapping[str, Any] | None:
    """The first MDC coding of Observation.code that is in `ignore_codes`, if any."""
    concept = observation.get("code")
    codings = concept.get("coding") if isinstance(concept, dict) else None
    if not ignore_codes or not isinstance(codings, list):
        return None
    for coding in codings:
        if (
            isinstance(coding, dict)
            and coding.get("system") == MDC
            and isinstance(coding.get("code"), str)
            and coding["code"] in ignore_codes
        ):
            return coding
    return None


def _node(entry: Any) -> Node:
    if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
        return Node(None)
    resource: dict[str, Any] = entry["resource"]
    request = entry.get("request")
    own_id = None
    if isinstance(request, dict) and request.get("method") == "PUT":
        match = _LOCAL.fullmatch(str(request.get("url", "")))
        if match and match.group("type") == resource.get("resourceType"):
            own_id = match.group("id")
    return Node(resource, own_id)


def _names(entry: Any, node: Node) -> Iterator[str]:
    if node.resource is None:
        return
    full_url = entry.get("fullUrl")
    if isinstance(full_url, str) and full_url:
        yield full_url
        tail = _ABSOLUTE_TAIL.fullmatch(full_url)
        if tail:
            yield tail.group("ref")
    if node.own_id is not None:
        yield f"{node.resource.get('resourceType')}/{node.own_id}"


def _reference_text(reference: Any) -> str | None:
    if isinstance(reference, dict) and isinstance(reference.get("reference"), str):
        return str(reference["reference"])
    return None


def gateway_references(observation: Mapping[str, Any]) -> Iterator[str]:
    """The references of the gateway extension (R4 valueReference, R5 valueCodeableReference)."""
    for extension in observation.get("extension") or ():
        if not isinstance(extension, dict) or extension.get("url") not in GATEWAY_EXTENSIONS:
            continue
        value = extension.get("valueReference")
        if value is None and isinstance(extension.get("valueCodeableReference"), dict):
            value = extension["valueCodeableReference"].get("reference")
        text = _reference_text(value)
        if text is not None:
            yield text


def resolve(reference: Any, kind: Kind, links: Links, what: str) -> Identifier | Node:
    """What a Reference names: a Bundle entry, or a (system, value) the registry can match.

    Understood: a Bundle entry's fullUrl (`urn:uuid:`, `urn:oid:`) or `Type/<id>`, a
    conditional `Type?identifier=system|value`, a logical `{"identifier": ...}`, and the
    service's own `Type/<id>`. The reference text is never quoted: it may hold a patient id.
    """
    if not isinstance(reference, dict):
        raise Unparseable(f"{what} must be a Reference", code=INVALID)
    text = reference.get("reference")
    if text is None:
        found = _identifier(reference.get("identifier"))
        if found is None:
            raise Unparseable(
                f"{what} has neither a reference nor an identifier with system and value",
                code="unsupported-reference",
            )
        return canonical_device(*found) if kind == "Device" else found
    if not isinstance(text, str):
        raise Unparseable(f"{what}.reference must be a string", code=INVALID)
    node = links.named(text)
    if node is not None and node.resource is not None:
        if node.resource.get("resourceType") != kind:
            raise Unparseable(
                f"{what} names a Bundle entry that is not a {kind}", code="wrong-reference"
            )
        return node
    if text.startswith(f"{kind}?"):
        found = _conditional(text[len(kind) + 1 :], what)
        return canonical_device(*found) if kind == "Device" else found
    local = _LOCAL.fullmatch(text)
    if local and local.group("type") == kind:
        return _OWN_SYSTEM[kind], local.group("id")
    if text.startswith(("urn:uuid:", "urn:oid:")):
        raise Unparseable(f"{what} names no entry of this Bundle", code="unresolved-reference")
    raise Unparseable(
        f"{what}: only a Bundle entry, {kind}/<id>, {kind}?identifier=system|value or an "
        "identifier can be resolved",
        code="unsupported-reference",
    )


def _conditional(query: str, what: str) -> Identifier:
    name, equals, raw = query.partition("=")
    if name != "identifier" or not equals or "&" in raw:
        raise Unparseable(
            f"{what}: a conditional reference must be identifier=system|value",
            code="unsupported-reference",
        )
    if "|" in raw:
        system, _, value = raw.partition("|")
        system, value = unquote(system), unquote(value)
    else:
        system, _, value = unquote(raw).partition("|")
    if not system or not value:
        raise Unparseable(
            f"{what}: a conditional reference needs identifier=system|value",
            code="unsupported-reference",
        )
    return system, value


def _identifier(raw: Any) -> Identifier | None:
    if not isinstance(raw, dict):
        return None
    system, value = raw.get("system"), raw.get("value")
    if isinstance(system, str) and system and isinstance(value, str) and value.strip():
        return system, value.strip()
    return None


def identifiers(resource: Mapping[str, Any]) -> list[Identifier]:
    """The resource's identifiers that have both a system and a value, in order."""
    found = (_identifier(raw) for raw in resource.get("identifier") or ())
    return [pair for pair in found if pair is not None]


def device_identifiers(resource: Mapping[str, Any]) -> list[Identifier]:
    """A PHD Device's identifiers, canonical, the EUI-64 system id first.

    `00-00-00-00-00-00-00-00` is the PHD IG's "no system id": it is left out, so the
    transport address (e.g. the Bluetooth MAC) identifies the device instead.
    """
    pairs = [canonical_device(*pair) for pair in identifiers(resource)]
    pairs = [p for p in pairs if not (p[0] == EUI64_SYSTEM and _NO_SYSTEM_ID.fullmatch(p[1]))]
    return sorted(pairs, key=lambda p: p[0] != EUI64_SYSTEM)


def patient_identifiers(resource: Mapping[str, Any]) -> list[Identifier]:
    """A Patient's identifiers, a fødselsnummer or D-nummer first."""
    return sorted(identifiers(resource), key=lambda p: p[0] not in NATIONAL_ID_SYSTEMS)


def device_identity(target: Identifier | Node, what: str) -> Identifier:
    """The one identifier a measurement's device is known by."""
    if isinstance(target, tuple):
        return target
    pairs = device_identifiers(target.resource or {})
    if pairs:
        return pairs[0]
    if target.own_id is not None:
        return DEVICE_ID_SYSTEM, target.own_id
    raise Unparseable(
        f"{what}: the Device entry has no identifier with system and value", code="no-device"
    )


def patient_identity(target: Identifier | Node) -> Identifier | None:
    """The identifier the sender names the patient by, when it names one."""
    if isinstance(target, tuple):
        return target
    pairs = patient_identifiers(target.resource or {})
    if pairs and pairs[0][0] in NATIONAL_ID_SYSTEMS:
        return pairs[0]
    if target.own_id is not None:
        return PATIENT_ID_SYSTEM, target.own_id
    return pairs[0] if pairs else None


def claim(kind: Kind, node: Node) -> RegistryClaim:
    """A Patient or Device entry, to be matched against the registry (never created)."""
    resource = node.resource or {}
    pairs = device_identifiers(resource) if kind == "Device" else patient_identifiers(resource)
    reference = f"{kind}/{node.own_id}" if node.own_id is not None else None
    return RegistryClaim(kind, tuple(pairs), reference)
