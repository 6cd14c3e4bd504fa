"""Flow materialization protocol messages, as the JSON codec writes them.

Field names are Flow's JSON names (camelCase; raw-JSON fields drop their `_json` suffix). Every
field is optional with its zero value as default because the runtime omits defaults. Raw-JSON
fields are `msgspec.Raw` so that documents pass through without being parsed and re-serialized.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec
from msgspec import Raw, Struct
from msgspec import field as _field

EMPTY = Raw(b"")  # an absent raw-JSON field (msgspec cannot decode `Raw | None`)

# --------------------------------------------------------------------------------------------
# Specs embedded in requests.


class StringInference(Struct, omit_defaults=True, rename="camel"):
    content_type: str = ""
    format: str = ""
    content_encoding: str = ""
    max_length: int = 0
    str_minimum: str = ""
    str_maximum: str = ""


class NumericInference(Struct, omit_defaults=True, rename="camel"):
    has_minimum: bool = False
    minimum: float = 0.0
    has_maximum: bool = False
    maximum: float = 0.0


class ArrayInference(Struct, omit_defaults=True, rename="camel"):
    min_items: int = 0
    has_max_items: bool = False
    max_items: int = 0
    item_types: list[str] = []


class Inference(Struct, omit_defaults=True, rename="camel"):
    types: list[str] = []
    string: StringInference | None = None
    title: str = ""
    description: str = ""
    default: Raw = EMPTY
    secret: bool = False
    exists: str = ""
    numeric: NumericInference | None = None
    array: ArrayInference | None = None
    enum: list[Any] | None = None
    reduce: str = ""
    content_media_type: str = ""

    @property
    def must_exist(self) -> bool:
        return self.exists == "MUST" and "null" not in self.types


class Projection(Struct, omit_defaults=True, rename="camel"):
    ptr: str = ""
    field: str = ""
    explicit: bool = False
    is_partition_key: bool = False
    is_primary_key: bool = False
    inference: Inference = _field(default_factory=Inference)


class CollectionSpec(Struct, omit_defaults=True, rename="camel"):
    name: str = ""
    write_schema: Raw = EMPTY
    read_schema: Raw = EMPTY
    key: list[str] = []
    uuid_ptr: str = ""
    partition_fields: list[str] = []
    projections: list[Projection] = []

    def projection(self, field_name: str) -> Projection | None:
        for p in self.projections:
            if p.field == field_name:
                return p
        return None


class FieldSelection(Struct, omit_defaults=True, rename="camel"):
    keys: list[str] = []
    values: list[str] = []
    document: str = ""
    field_config: dict[str, Raw] = {}


class MaterializationBinding(Struct, omit_defaults=True, rename="camel"):
    resource_config: Raw = EMPTY
    resource_path: list[str] = []
    collection: CollectionSpec = _field(default_factory=CollectionSpec)
    field_selection: FieldSelection = _field(default_factory=FieldSelection)
    delta_updates: bool = False
    journal_read_suffix: str = ""
    backfill: int = 0
    state_key: str = ""


class MaterializationSpec(Struct, omit_defaults=True, rename="camel"):
    name: str = ""
    connector_type: str = ""
    config: Raw = EMPTY
    bindings: list[MaterializationBinding] = []


class RangeSpec(Struct, omit_defaults=True, rename="camel"):
    key_begin: int = 0
    key_end: int = 0
    r_clock_begin: int = 0
    r_clock_end: int = 0


# --------------------------------------------------------------------------------------------
# Requests.


class Spec(Struct, omit_defaults=True, rename="camel"):
    connector_type: str = ""
    config: Raw = EMPTY


class ValidateBinding(Struct, omit_defaults=True, rename="camel"):
    resource_config: Raw = EMPTY
    collection: CollectionSpec = _field(default_factory=CollectionSpec)
    field_config: dict[str, Raw] = {}
    backfill: int = 0
    group_by: list[str] = []


class Validate(Struct, omit_defaults=True, rename="camel"):
    name: str = ""
    connector_type: str = ""
    config: Raw = EMPTY
    bindings: list[ValidateBinding] = []
    last_materialization: MaterializationSpec | None = None
    last_version: str = ""


class Apply(Struct, omit_defaults=True, rename="camel"):
    materialization: MaterializationSpec = _field(default_factory=MaterializationSpec)
    version: str = ""
    last_materialization: MaterializationSpec | None = None
    last_version: str = ""
    state: Raw = EMPTY


class Open(Struct, omit_defaults=True, rename="camel"):
    materialization: MaterializationSpec = _field(default_factory=MaterializationSpec)
    version: str = ""
    range: RangeSpec = _field(default_factory=RangeSpec)
    state: Raw = EMPTY


class Acknowledge(Struct, omit_defaults=True):
    pass


class Load(Struct, omit_defaults=True, rename="camel"):
    binding: int = 0
    key_packed: bytes = b""
    key: Raw = EMPTY


class Flush(Struct, omit_defaults=True):
    pass


class Store(Struct, omit_defaults=True, rename="camel"):
    binding: int = 0
    key_packed: bytes = b""
    key: Raw = EMPTY
    values_packed: bytes = b""
    values: Raw = EMPTY
    doc: Raw = EMPTY
    exists: bool = False
    delete: bool = False


class StartCommit(Struct, omit_defaults=True, rename="camel"):
    runtime_checkpoint: Raw = EMPTY


class Request(Struct, omit_defaults=True, rename="camel"):
    spec: Spec | None = None
    validate: Validate | None = None
    apply: Apply | None = None
    open: Open | None = None
    acknowledge: Acknowledge | None = None
    load: Load | None = None
    flush: Flush | None = None
    store: Store | None = None
    start_commit: StartCommit | None = None

    def kind(self) -> str:
        """The name of the one message this request carries, as it is spelled on the wire."""
        for name in REQUEST_KINDS:
            if getattr(self, _ATTR[name]) is not None:
                return name
        return ""


REQUEST_KINDS = (
    "spec",
    "validate",
    "apply",
    "open",
    "acknowledge",
    "load",
    "flush",
    "store",
    "startCommit",
)
_ATTR = {k: ("start_commit" if k == "startCommit" else k) for k in REQUEST_KINDS}


# --------------------------------------------------------------------------------------------
# Responses.


class ConnectorState(Struct, omit_defaults=True, rename="camel"):
    updated: Raw = EMPTY
    merge_patch: bool = False


PROTOCOL_VERSION = 3032023


class SpecResponse(Struct, omit_defaults=True, rename="camel"):
    protocol: int = 0
    config_schema: Raw = EMPTY
    resource_config_schema: Raw = EMPTY
    documentation_url: str = ""

    def __post_init__(self) -> None:
        # The protocol version must always be written, so it cannot be an omitted default.
        if not self.protocol:
            self.protocol = PROTOCOL_VERSION


class Constraint(Struct, omit_defaults=True, rename="camel"):
    type: str = "INVALID"
    reason: str = ""


class ValidatedBinding(Struct, omit_defaults=True, rename="camel"):
    constraints: dict[str, Constraint] = {}
    resource_path: list[str] = []
    delta_updates: bool = False


class Validated(Struct, omit_defaults=True):
    bindings: list[ValidatedBinding] = []


class Applied(Struct, omit_defaults=True, rename="camel"):
    action_description: str = ""
    state: ConnectorState | None = None


class Opened(Struct, omit_defaults=True, rename="camel"):
    runtime_checkpoint: Raw = EMPTY


class Acknowledged(Struct, omit_defaults=True):
    state: ConnectorState | None = None


class Loaded(Struct, omit_defaults=True):
    binding: int = 0
    doc: Raw = EMPTY


class Flushed(Struct, omit_defaults=True):
    state: ConnectorState | None = None


class StartedCommit(Struct, omit_defaults=True):
    state: ConnectorState | None = None


class Response(Struct, omit_defaults=True, rename="camel"):
    spec: SpecResponse | None = None
    validated: Validated | None = None
    applied: Applied | None = None
    opened: Opened | None = None
    acknowledged: Acknowledged | None = None
    loaded: Loaded | None = None
    flushed: Flushed | None = None
    started_commit: StartedCommit | None = None


# --------------------------------------------------------------------------------------------
# Codec.

_request_decoder = msgspec.json.Decoder(Request)
_encoder = msgspec.json.Encoder()


def decode_request(line: bytes | str) -> Request:
    """One request line; any malformation (including invalid UTF-8) raises msgspec.DecodeError."""
    try:
        return _request_decoder.decode(line)
    except UnicodeDecodeError as err:
        raise msgspec.DecodeError(f"invalid UTF-8: {err.reason} at byte {err.start}") from None
    except RecursionError:
        # msgspec descends one Python recursion level per nesting level, even into raw values.
        raise msgspec.DecodeError(
            f"nested too deeply: JSON deeper than about {sys.getrecursionlimit():,} levels cannot be read"
        ) from None


def encode(msg: Struct) -> bytes:
    """One compact JSON object; bytes fields become standard base64, as Flow expects."""
    return _encoder.encode(msg)


def raw(obj: Any) -> Raw:
    """Embed a Python value as a raw JSON field."""
    return Raw(_encoder.encode(obj))


def parse_raw(value: Raw | None, default: Any = None) -> Any:
    """A raw-JSON field as Python values, or `default` when it is absent."""
    if value is None or len(value) == 0:
        return default
    return msgspec.json.decode(value)
