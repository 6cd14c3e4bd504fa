"""Endpoint and resource configuration.

The pydantic models are the single source of truth: `endpoint_schema()` and `resource_schema()`
are what Spec returns, and `parse_endpoint()` / `parse_resource()` turn user JSON into typed
configs with errors that name the offending field. Parsing is strict: an unknown key is an error,
because a typo in a config should never be silently ignored.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic.json_schema import GenerateJsonSchema, SkipJsonSchema

DRAFT = "https://json-schema.org/draft/2020-12/schema"
DOCS_URL = "https://go.estuary.dev/materialize-postgresql"
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_PORT = 5432

# Feature flags and their defaults for this connector (advanced.feature_flags).
FEATURE_FLAG_DEFAULTS: dict[str, bool] = {
    "datetime_keys_as_string": True,
    "native_binary_column_type": True,
    "enum": True,
    "jsonb": True,
    "retain_existing_data_on_backfill": False,
    "allow_existing_tables_for_new_bindings": False,
    "always_drop_tables_on_backfill": False,
}


class ConfigError(ValueError):
    """A configuration problem the user must fix; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, hide_input_in_errors=True)


def _secret(title: str, description: str, **extra: Any) -> Any:
    return Field(title=title, description=description, json_schema_extra={"secret": True, **extra})


# --------------------------------------------------------------------------------------------
# Credentials.


class UserPassword(_Strict):
    model_config = ConfigDict(
        title="Password",
        json_schema_extra={
            "$schema": DRAFT,
            "$id": "https://github.com/estuary/connectors/materialize-postgres/user-password",
        },
    )
    auth_type: Literal["UserPassword"] = Field(
        default="UserPassword", json_schema_extra={"const": "UserPassword", "order": 0}
    )
    password: SecretStr = _secret("Password", "Password of the database user named above.")


class AWSIAM(_Strict):
    model_config = ConfigDict(
        title="AWS IAM",
        json_schema_extra={"$schema": DRAFT, "$id": "https://github.com/estuary/connectors/go/auth/iam/aws-config"},
    )
    auth_type: Literal["AWSIAM"] = Field(default="AWSIAM", json_schema_extra={"const": "AWSIAM", "order": 0})
    aws_region: str = Field(title="AWS Region", description="The AWS region the database runs in, e.g. us-east-1.")
    aws_role_arn: str = Field(
        title="AWS Role ARN",
        description="ARN of an IAM role allowed to connect to the database (rds-db:connect); it is assumed to "
        "sign the authentication token.",
    )
    # Short-lived credentials Flow's control plane adds when it has assumed the role itself.
    aws_access_key_id: SkipJsonSchema[SecretStr | None] = None
    aws_secret_access_key: SkipJsonSchema[SecretStr | None] = None
    aws_session_token: SkipJsonSchema[SecretStr | None] = None


class GCPIAM(_Strict):
    model_config = ConfigDict(
        title="Google Cloud IAM",
        json_schema_extra={"$schema": DRAFT, "$id": "https://github.com/estuary/connectors/go/auth/iam/gcp-config"},
    )
    auth_type: Literal["GCPIAM"] = Field(default="GCPIAM", json_schema_extra={"const": "GCPIAM", "order": 0})
    gcp_service_account_to_impersonate: str = Field(
        title="Service Account",
        description="Email of the service account that is a Cloud SQL IAM user of the database.",
    )
    gcp_workload_identity_pool_audience: str = Field(
        title="Workload Identity Pool Audience",
        description="Audience of the workload identity pool provider, such as "
        "//iam.googleapis.com/projects/<n>/locations/global/workloadIdentityPools/<pool>/providers/<provider>.",
    )
    gcp_access_token: SkipJsonSchema[SecretStr | None] = None  # added by Flow's control plane


class AzureIAM(_Strict):
    model_config = ConfigDict(
        title="Azure IAM",
        json_schema_extra={"$schema": DRAFT, "$id": "https://github.com/estuary/connectors/go/auth/iam/azure-config"},
    )
    auth_type: Literal["AzureIAM"] = Field(default="AzureIAM", json_schema_extra={"const": "AzureIAM", "order": 0})
    azure_client_id: str = Field(
        title="Azure Client ID", description="Client ID of the app registration used to sign in with Entra ID."
    )
    azure_tenant_id: str = Field(
        title="Azure Tenant ID", description="Entra ID (Azure Active Directory) tenant of that app registration."
    )
    azure_access_token: SkipJsonSchema[SecretStr | None] = None  # added by Flow's control plane


Credentials = Annotated[UserPassword | AWSIAM | GCPIAM | AzureIAM, Field(discriminator="auth_type")]


# --------------------------------------------------------------------------------------------
# Nested endpoint sections.


class DbtJobTrigger(_Strict):
    model_config = ConfigDict(
        title="dbt Cloud Job Trigger",
        json_schema_extra={"description": "Run a dbt Cloud job after new data has been committed."},
    )
    job_id: str = Field(title="Job ID", description="ID of the dbt Cloud job to run.")
    account_id: str = Field(title="Account ID", description="ID of the dbt Cloud account that owns the job.")
    access_url: str | None = Field(
        default=None,
        title="Access URL",
        description="Your dbt Cloud access URL, shown under Account Settings.",
        json_schema_extra={"pattern": "^https://.+$"},
    )
    api_key: SecretStr = _secret("API Key", "A dbt Cloud API token allowed to trigger the job.")
    cause: str | None = Field(
        default=None, title="Cause Message", description="Reason shown on the triggered run (default: Estuary Flow)."
    )
    mode: Literal["skip", "replace", "ignore"] = Field(
        default="skip",
        title="Job Trigger Mode",
        description="What to do when the job is already running: skip this trigger, replace (cancel) the "
        "running job, or ignore it and start another run.",
        json_schema_extra={"nonsensitive": True},
    )
    interval: str = Field(
        default="30m",
        title="Minimum Run Interval",
        description="Shortest time between two triggered runs; runs are only triggered after data was written.",
        json_schema_extra={"nonsensitive": True},
    )


class Advanced(_Strict):
    model_config = ConfigDict(
        title="Advanced Options",
        json_schema_extra={
            "description": "Settings most users never need to change.",
            "advanced": True,
        },
    )
    sslmode: str | None = Field(
        default=None,
        title="SSL Mode",
        description="libpq sslmode for the connection to PostgreSQL (verify-ca and verify-full check the "
        "server certificate against the system trust store, or against sslrootcert when given).",
        json_schema_extra={"enum": list(SSL_MODES)},
    )
    sslrootcert: str | None = Field(
        default=None,
        title="SSL Root Certificate",
        description="PEM text of the certificate authority that signed the server certificate. Optional; "
        "used by verify-ca and verify-full instead of the system trust store.",
        json_schema_extra={"multiline": True},
    )
    no_flow_document: bool = Field(
        default=False,
        title="Exclude Flow Document",
        description="Do not require the flow_document column for standard updates; documents are rebuilt "
        "from the columns when they are loaded.",
        json_schema_extra={"nonsensitive": True},
    )
    feature_flags: str | None = Field(
        default=None,
        title="Feature Flags",
        description="Comma-separated switches for behaviour under evaluation; set only when asked to by support.",
        json_schema_extra={"nonsensitive": True},
    )

    @field_validator("sslmode")
    @classmethod
    def _known_sslmode(cls, v: str | None) -> str | None:
        if v is not None and v not in SSL_MODES:
            raise ValueError(
                f"invalid 'sslmode' configuration: unknown setting {v!r}; use one of {', '.join(SSL_MODES)}"
            )
        return v


class SSHForwarding(_Strict):
    model_config = ConfigDict(title="SSH Forwarding")
    sshEndpoint: str = Field(
        title="SSH Endpoint",
        description="The bastion host to tunnel through, as ssh://user@hostname[:port].",
        json_schema_extra={"pattern": "^ssh://.+@.+$"},
    )
    privateKey: SecretStr = _secret(
        "SSH Private Key", "Private key (PEM or OpenSSH format) of the SSH user.", multiline=True
    )


class NetworkTunnel(_Strict):
    model_config = ConfigDict(
        title="Network Tunnel",
        json_schema_extra={"description": "Reach a database in a private network through an SSH bastion host."},
    )
    sshForwarding: SSHForwarding | None = None


# --------------------------------------------------------------------------------------------
# Endpoint and resource.


class EndpointConfig(_Strict):
    model_config = ConfigDict(
        title="SQL Connection",
        json_schema_extra={
            "$schema": DRAFT,
            "$id": "https://github.com/estuary/connectors/materialize-postgres/config",
        },
    )
    address: str = Field(
        title="Address",
        description="Host and port of the PostgreSQL server as host[:port]; the port defaults to 5432.",
        json_schema_extra={"order": 0},
    )
    user: str = Field(title="User", description="Database role to connect as.", json_schema_extra={"order": 1})
    database: str | None = Field(
        default=None,
        title="Database",
        description="Database to write into; by default the one named like the user.",
        json_schema_extra={"order": 2},
    )
    schema_: str = Field(
        default="public",
        alias="schema",
        title="Database Schema",
        description="Schema for tables whose binding names none, and for the flow_checkpoints_v1 table.",
        json_schema_extra={"order": 3},
    )
    hardDelete: bool = Field(
        default=False,
        title="Hard Delete",
        description="Delete rows whose source documents were deleted. When off, a deleted document is kept "
        "as a row and its _meta/op column reads 'd' (soft delete).",
        json_schema_extra={"nonsensitive": True, "order": 4},
    )
    credentials: Credentials | None = Field(
        default=None,
        title="Authentication",
        json_schema_extra={
            "default": {"auth_type": "UserPassword"},
            "discriminator": {"propertyName": "auth_type"},
            "order": 5,
            "x-iam-auth": True,
            "x-iam-azure-scope": "https://ossrdbms-aad.database.windows.net/.default",
        },
    )
    dbt_job_trigger: DbtJobTrigger | None = None
    advanced: Advanced = Field(default_factory=Advanced)
    networkTunnel: NetworkTunnel | None = None
    # Older configs carry the password at the top level; accepted, never advertised.
    password: SkipJsonSchema[SecretStr | None] = None

    @property
    def schema_name(self) -> str:
        return self.schema_

    def host_port(self) -> tuple[str, int]:
        return split_address(self.address)

    def password_value(self) -> str | None:
        if isinstance(self.credentials, UserPassword):
            return self.credentials.password.get_secret_value()
        if self.password is not None:
            return self.password.get_secret_value()
        return None

    def feature_flags(self) -> dict[str, bool]:
        return parse_feature_flags(self.advanced.feature_flags)

    def ssh(self) -> SSHForwarding | None:
        return self.networkTunnel.sshForwarding if self.networkTunnel else None


class ResourceConfig(_Strict):
    model_config = ConfigDict(
        title="SQL Table",
        json_schema_extra={
            "$schema": DRAFT,
            "$id": "https://github.com/estuary/connectors/materialize-postgres/table-config",
        },
    )
    table: str = Field(
        title="Table",
        description="Table to materialize into. The connector creates it unless it created it before.",
        json_schema_extra={"x-collection-name": True},
    )
    schema_: str | None = Field(
        default=None,
        alias="schema",
        title="Alternative Schema",
        description="Schema of this table, if not the endpoint's schema.",
        json_schema_extra={"x-schema-name": True},
    )
    additional_table_create_sql: str | None = Field(
        default=None,
        title="Additional Table Create SQL",
        description="SQL run in the same transaction that creates the table, e.g. to make it a TimescaleDB "
        "hypertable or add an index.",
        json_schema_extra={"multiline": True},
    )
    delta_updates: bool = Field(
        default=False,
        title="Delta Update",
        description="Append every document as a new row (no primary key, no merges) instead of keeping one "
        "row per key.",
        json_schema_extra={"nonsensitive": True, "x-delta-updates": True},
    )

    def path(self, endpoint_schema: str) -> list[str]:
        schema = self.schema_ or endpoint_schema
        return [schema, self.table] if schema else [self.table]


# --------------------------------------------------------------------------------------------
# Parsing.


def split_address(address: str) -> tuple[str, int]:
    """`host[:port]`, with IPv6 literals in brackets. The port defaults to 5432."""
    addr = address.strip()
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif addr.count(":") == 1:
        host, port = addr.split(":")
    else:
        host, port = addr, ""
    if not host:
        raise ConfigError(f"invalid 'address' {address!r}: it has no host name")
    if not port:
        return host, DEFAULT_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"invalid 'address' {address!r}: port {port!r} is not a number between 1 and 65535")
    return host, int(port)


def parse_feature_flags(text: str | None) -> dict[str, bool]:
    flags = dict(FEATURE_FLAG_DEFAULTS)
    for raw in (text or "").split(","):
        name = raw.strip()
        if not name:
            continue
        if name.startswith("no_"):
            flags[name[3:]] = False
        else:
            flags[name] = True
    return flags


def _describe(err: ValidationError, what: str) -> str:
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if str(p) not in ("UserPassword", "AWSIAM", "GCPIAM", "AzureIAM"))
        kind = e["type"]
        if kind == "missing":
            problems.append(f"missing '{loc}'")
        elif kind == "extra_forbidden":
            problems.append(f"unknown field '{loc}' (check its spelling)")
        elif kind == "union_tag_invalid":
            problems.append(f"'{loc}.auth_type' must be one of UserPassword, AWSIAM, GCPIAM, AzureIAM")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"'{loc}': {msg}" if loc else msg)
    return f"invalid {what} config: " + "; ".join(problems)


def parse_endpoint(data: Any) -> EndpointConfig:
    if not isinstance(data, dict):
        raise ConfigError("invalid endpoint config: expected a JSON object")
    data = copy.deepcopy(data)
    creds = data.get("credentials")
    if isinstance(creds, dict) and "auth_type" not in creds:
        creds["auth_type"] = "UserPassword"
    try:
        cfg = EndpointConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, "endpoint")) from None
    if not cfg.address.strip():
        raise ConfigError("missing 'address'")
    if not cfg.user:
        raise ConfigError("missing 'user'")
    split_address(cfg.address)
    if cfg.credentials is None and (cfg.password is None or not cfg.password.get_secret_value()):
        raise ConfigError("missing 'password': set credentials.password (or choose an IAM auth_type)")
    if isinstance(cfg.credentials, UserPassword) and not cfg.credentials.password.get_secret_value():
        raise ConfigError("missing 'password'")
    if is_supabase_pooler(cfg.address):
        raise ConfigError(
            f"address must be a direct connection: address {cfg.address!r} is using the Supabase connection "
            "pooler; use the database's direct address (db.<project>.supabase.co:5432) instead"
        )
    return cfg


def is_supabase_pooler(address: str) -> bool:
    host = address.strip().lower()
    return host.endswith(".pooler.supabase.com") or host.endswith(".pooler.supabase.com:6543")


def parse_resource(data: Any) -> ResourceConfig:
    if not isinstance(data, dict):
        raise ConfigError("invalid resource config: expected a JSON object")
    try:
        res = ResourceConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_describe(err, "resource")) from None
    if not res.table:
        raise ConfigError("missing table")
    return res


# --------------------------------------------------------------------------------------------
# JSON schemas for Spec.


class _Schema(GenerateJsonSchema):
    """Titles only where we give them, as the Go connector's schemas have it."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline `$defs` references and fold pydantic's `anyOf [T, null]` for optional fields into T."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = walk(copy.deepcopy(defs[node["$ref"].split("/")[-1]]))
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return {**target, **walk(extra)}
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o != {"type": "null"}]
            if len(options) == 1:
                rest = {k: v for k, v in node.items() if k != "anyOf"}
                if rest.get("default", 0) is None:
                    rest.pop("default")
                return walk({**options[0], **rest})
        if "oneOf" in node and "discriminator" in node and isinstance(node["discriminator"], dict):
            node = {**node, "discriminator": {"propertyName": node["discriminator"]["propertyName"]}}
        out = {k: walk(v) for k, v in node.items() if k != "writeOnly"}
        if out.get("format") == "password":
            out.pop("format")
        if (
            out.get("type") == "object"
            and "additionalProperties" in out
            and out.get("title")
            in (
                "SQL Connection",
                "SQL Table",
                "Password",
                "AWS IAM",
                "Google Cloud IAM",
                "Azure IAM",
            )
        ):
            # Top-level and credential schemas are closed by the parser, but advertised as the Go
            # connector advertises them.
            out.pop("additionalProperties")
        return out

    return walk(schema)


def endpoint_schema() -> dict[str, Any]:
    schema = _inline(EndpointConfig.model_json_schema(by_alias=True, schema_generator=_Schema))
    creds = schema["properties"]["credentials"]
    creds["type"] = "object"
    schema["required"] = ["address", "user", "credentials"]
    return schema


def resource_schema() -> dict[str, Any]:
    return _inline(ResourceConfig.model_json_schema(by_alias=True, schema_generator=_Schema))
