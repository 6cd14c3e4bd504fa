"""Passwords for IAM authentication: an RDS auth token (AWS) or an access token (Google Cloud, Azure).

In Flow, the control plane does the cloud sign-in for configs marked `x-iam-auth`: it assumes the
AWS role, impersonates the Google service account or signs in to the Azure app, and adds the
short-lived result to `credentials` (`aws_access_key_id`/`aws_secret_access_key`/`aws_session_token`,
`gcp_access_token`, `azure_access_token`), as Estuary's go/auth/iam reads them. Those are used when
present. Otherwise (the standalone runner) the cloud SDK's default credentials are used: STS
AssumeRole of `aws_role_arn`, google-auth impersonation of the service account, azure-identity's
DefaultAzureCredential. The SDKs are optional extras, imported only here and only when needed.

Tokens are secrets: they are returned, never logged, and never part of an error message.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from .config import AWSIAM, GCPIAM, AzureIAM
from .connect import ConnectError

# RDS auth tokens live 15 minutes (the AWS maximum); each new connection gets a fresh one.
RDS_TOKEN_EXPIRES_S = 900
ROLE_SESSION_NAME = "materialize-postgres"
GCP_SQL_SCOPE = "https://www.googleapis.com/auth/sqlservice.login"
AZURE_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"


class IAMError(ConnectError):
    """No IAM token could be made: a missing SDK, missing cloud credentials, or a refused sign-in."""


def token_for(creds: AWSIAM | GCPIAM | AzureIAM, *, user: str, host: str, port: int) -> str:
    """The password to send for `user` at `host:port` (the database's own address, not a tunnel's)."""
    if isinstance(creds, AWSIAM):
        return _aws_token(creds, user=user, host=host, port=port)
    if isinstance(creds, GCPIAM):
        return _injected(creds, "gcp_access_token") or _gcp_token(creds)
    return _injected(creds, "azure_access_token") or _azure_token(creds)


def _require(module: str, package: str, extra: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise IAMError(
            f"{what} authentication needs the {package} package, which is not installed: "
            f"pip install 'materialize-postgres[{extra}]'"
        ) from None


def _injected(creds: Any, name: str) -> str | None:
    """A token Flow added to the config (not part of the advertised schema); SecretStr or str."""
    value = getattr(creds, name, None)
    if value is None:
        return None
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return text or None


# --------------------------------------------------------------------------------------------
# AWS: an RDS IAM auth token, a SigV4-presigned "connect" URL without its scheme.


def _aws_token(creds: AWSIAM, *, user: str, host: str, port: int) -> str:
    session_mod = _require("botocore.session", "botocore", "aws", "AWS IAM")
    session = session_mod.get_session()
    keys = _aws_injected_keys(creds) or _aws_assumed_keys(session, creds)
    rds = session.create_client("rds", region_name=creds.aws_region, **keys)
    token: str = rds.generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user, Region=creds.aws_region)
    return token


def _aws_injected_keys(creds: AWSIAM) -> dict[str, str] | None:
    access = _injected(creds, "aws_access_key_id")
    secret = _injected(creds, "aws_secret_access_key")
    if not access or not secret:
        return None
    keys = {"aws_access_key_id": access, "aws_secret_access_key": secret}
    session_token = _injected(creds, "aws_session_token")
    if session_token:
        keys["aws_session_token"] = session_token
    return keys


def _aws_assumed_keys(session: Any, creds: AWSIAM) -> dict[str, str]:
    """Temporary keys for `aws_role_arn`, assumed with the default credential chain's identity."""
    if session.get_credentials() is None:
        raise IAMError(
            "AWS IAM authentication found no AWS credentials to assume role "
            f"{creds.aws_role_arn!r} with: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or run where an instance or task role is available"
        )
    sts = _sts_client(session, creds.aws_region)
    try:
        out = sts.assume_role(RoleArn=creds.aws_role_arn, RoleSessionName=ROLE_SESSION_NAME)["Credentials"]
    except Exception as err:  # botocore's ClientError and connection errors; the message holds no secret
        raise IAMError(f"AWS IAM authentication could not assume role {creds.aws_role_arn!r}: {err}") from None
    return {
        "aws_access_key_id": out["AccessKeyId"],
        "aws_secret_access_key": out["SecretAccessKey"],
        "aws_session_token": out["SessionToken"],
    }


def _sts_client(session: Any, region: str) -> Any:
    return session.create_client("sts", region_name=region)


# --------------------------------------------------------------------------------------------
# Google Cloud: an OAuth access token of the impersonated service account (Cloud SQL IAM user).


def _gcp_token(creds: GCPIAM) -> str:
    google_auth = _require("google.auth", "google-auth", "gcp", "Google Cloud IAM")
    impersonated = _require("google.auth.impersonated_credentials", "google-auth", "gcp", "Google Cloud IAM")
    requests = _require("google.auth.transport.requests", "requests", "gcp", "Google Cloud IAM")
    try:
        source, _ = google_auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        target = impersonated.Credentials(
            source_credentials=source,
            target_principal=creds.gcp_service_account_to_impersonate,
            target_scopes=[GCP_SQL_SCOPE],
        )
        target.refresh(requests.Request())
    except Exception as err:  # google.auth.exceptions.* and transport errors
        raise IAMError(
            "Google Cloud IAM authentication could not get a token for service account "
            f"{creds.gcp_service_account_to_impersonate!r}: {err}"
        ) from None
    return str(target.token)


# --------------------------------------------------------------------------------------------
# Azure: an Entra ID access token for Azure Database for PostgreSQL.


def _azure_token(creds: AzureIAM) -> str:
    identity = _require("azure.identity", "azure-identity", "azure", "Azure IAM")
    try:
        credential = identity.DefaultAzureCredential(
            managed_identity_client_id=creds.azure_client_id,
            workload_identity_client_id=creds.azure_client_id,
            workload_identity_tenant_id=creds.azure_tenant_id,
        )
        token = credential.get_token(AZURE_SCOPE, tenant_id=creds.azure_tenant_id)
    except Exception as err:  # azure.core.exceptions.ClientAuthenticationError and friends
        raise IAMError(
            f"Azure IAM authentication could not get a token for client {creds.azure_client_id!r} "
            f"in tenant {creds.azure_tenant_id!r}: {err}"
        ) from None
    return str(token.token)
