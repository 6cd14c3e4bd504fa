"""IAM passwords without a network: RDS auth tokens signed with fake static credentials (checked
against an independent SigV4 computation), STS AssumeRole through botocore's Stubber, tokens that
Flow injects into the config, and a clear "install the extra" error for every missing SDK."""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import pytest
from pydantic import SecretStr

from materialize_postgres.config import AWSIAM, GCPIAM, AzureIAM, parse_endpoint
from materialize_postgres.connect import ConnectError, Target, connection_kwargs
from materialize_postgres.iam import IAMError, token_for

REGION = "eu-west-1"
ROLE = "arn:aws:iam::123456789012:role/flow-materialize"
HOST, PORT, USER = "db.cluster-abc.eu-west-1.rds.amazonaws.com", 5432, "flow user"

# Flow adds these to `credentials` (go/auth/iam's IAMTokens); stand-ins until config.py models them.


class AWSIAMWithTokens(AWSIAM):
    aws_access_key_id: SecretStr
    aws_secret_access_key: SecretStr
    aws_session_token: SecretStr


class GCPIAMWithToken(GCPIAM):
    gcp_access_token: SecretStr


class AzureIAMWithToken(AzureIAM):
    azure_access_token: SecretStr


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials from the machine running the tests, and never a call to instance metadata."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def aws_creds() -> AWSIAM:
    cfg = parse_endpoint(
        {
            "address": f"{HOST}:{PORT}",
            "user": USER,
            "credentials": {"auth_type": "AWSIAM", "aws_region": REGION, "aws_role_arn": ROLE},
        }
    )
    assert isinstance(cfg.credentials, AWSIAM)
    return cfg.credentials


def check_rds_token(token: str, *, access_key: str, secret_key: str, session_token: str) -> None:
    """Recompute the SigV4 query signature (AWS docs, 'Create a signed AWS API request') and compare."""
    host_port, _, query = token.partition("/?")
    assert host_port == f"{HOST}:{PORT}"
    params = dict(parse_qsl(query, keep_blank_values=True))
    signature = params.pop("X-Amz-Signature")
    date = params["X-Amz-Date"]
    scope = f"{date[:8]}/{REGION}/rds-db/aws4_request"
    assert params["Action"] == "connect"
    assert params["DBUser"] == USER
    assert params["X-Amz-Credential"] == f"{access_key}/{scope}"
    assert params["X-Amz-Expires"] == "900"
    assert params["X-Amz-Security-Token"] == session_token
    assert params["X-Amz-SignedHeaders"] == "host"

    def enc(s: str) -> str:
        return quote(s, safe="-_.~")

    canonical_query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(params.items()))
    canonical = "\n".join(["GET", "/", canonical_query, f"host:{host_port}", "", "host", hashlib.sha256().hexdigest()])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret_key}".encode()
    for part in (date[:8], REGION, "rds-db", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    assert hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest() == signature


# --------------------------------------------------------------------------------------------
# AWS, with botocore.


def test_rds_token_is_signed_with_the_credentials_flow_injects() -> None:
    pytest.importorskip("botocore")
    creds = AWSIAMWithTokens(
        aws_region=REGION,
        aws_role_arn=ROLE,
        aws_access_key_id=SecretStr("ASIAFAKEINJECTED0001"),
        aws_secret_access_key=SecretStr("fake/secret+key"),
        aws_session_token=SecretStr("fake-session/token=="),
    )
    token = token_for(creds, user=USER, host=HOST, port=PORT)
    check_rds_token(
        token, access_key="ASIAFAKEINJECTED0001", secret_key="fake/secret+key", session_token="fake-session/token=="
    )


def stub_sts(monkeypatch: pytest.MonkeyPatch, respond: Any) -> None:
    """Route iam's STS client through botocore's Stubber; `respond(stubber)` queues the answers."""
    import botocore.session
    from botocore.stub import Stubber

    from materialize_postgres import iam

    client = botocore.session.get_session().create_client(
        "sts", region_name=REGION, aws_access_key_id="AKIAFAKE", aws_secret_access_key="fake"
    )
    stubber = Stubber(client)
    respond(stubber)
    stubber.activate()
    monkeypatch.setattr(iam, "_sts_client", lambda session, region: client)


def test_rds_token_assumes_the_role_with_the_default_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("botocore")
    import datetime as dt

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEDEFAULT00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-default-secret")
    assumed = {
        "AccessKeyId": "ASIAFAKEASSUMED00001",
        "SecretAccessKey": "fake-assumed-secret",
        "SessionToken": "fake-assumed-session",
        "Expiration": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    }
    expected = {"RoleArn": ROLE, "RoleSessionName": "materialize-postgres"}
    stub_sts(monkeypatch, lambda s: s.add_response("assume_role", {"Credentials": assumed}, expected))
    token = token_for(aws_creds(), user=USER, host=HOST, port=PORT)
    check_rds_token(
        token,
        access_key="ASIAFAKEASSUMED00001",
        secret_key="fake-assumed-secret",
        session_token="fake-assumed-session",
    )


def test_refused_assume_role_is_an_iam_error_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("botocore")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFAKEDEFAULT00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-default-secret")
    stub_sts(monkeypatch, lambda s: s.add_client_error("assume_role", "AccessDenied", "not authorized", 403))
    with pytest.raises(IAMError, match=f"could not assume role '{ROLE}': .*AccessDenied") as info:
        token_for(aws_creds(), user=USER, host=HOST, port=PORT)
    assert isinstance(info.value, ConnectError)
    assert "fake-default-secret" not in str(info.value)


def test_no_aws_credentials_is_an_iam_error() -> None:
    pytest.importorskip("botocore")
    with pytest.raises(IAMError, match=f"found no AWS credentials to assume role '{ROLE}'"):
        token_for(aws_creds(), user=USER, host=HOST, port=PORT)


def test_connection_uses_the_rds_token_as_password() -> None:
    pytest.importorskip("botocore")
    cfg = parse_endpoint(
        {
            "address": f"{HOST}:{PORT}",
            "user": USER,
            "credentials": {"auth_type": "AWSIAM", "aws_region": REGION, "aws_role_arn": ROLE},
        }
    )
    injected = AWSIAMWithTokens(
        aws_region=REGION,
        aws_role_arn=ROLE,
        aws_access_key_id=SecretStr("ASIAFAKEINJECTED0001"),
        aws_secret_access_key=SecretStr("fake-secret"),
        aws_session_token=SecretStr("fake-session"),
    )
    cfg = cfg.model_copy(update={"credentials": injected})
    kwargs = connection_kwargs(cfg, Target(HOST, PORT), application="test")
    check_rds_token(
        kwargs["password"], access_key="ASIAFAKEINJECTED0001", secret_key="fake-secret", session_token="fake-session"
    )


# --------------------------------------------------------------------------------------------
# Google Cloud and Azure: injected tokens are used as they are.


def test_gcp_uses_the_access_token_flow_injects() -> None:
    creds = GCPIAMWithToken(
        gcp_service_account_to_impersonate="flow@project.iam.gserviceaccount.com",
        gcp_workload_identity_pool_audience="//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
        gcp_access_token=SecretStr("ya29.fake-google-token"),
    )
    assert token_for(creds, user=USER, host=HOST, port=PORT) == "ya29.fake-google-token"


def test_azure_uses_the_access_token_flow_injects() -> None:
    creds = AzureIAMWithToken(
        azure_client_id="00000000-0000-0000-0000-000000000001",
        azure_tenant_id="00000000-0000-0000-0000-000000000002",
        azure_access_token=SecretStr("eyJ0eXAi.fake-azure-token"),
    )
    assert token_for(creds, user=USER, host=HOST, port=PORT) == "eyJ0eXAi.fake-azure-token"


# --------------------------------------------------------------------------------------------
# Missing SDKs.


GCP = GCPIAM(
    gcp_service_account_to_impersonate="flow@project.iam.gserviceaccount.com",
    gcp_workload_identity_pool_audience="//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q",
)
AZURE = AzureIAM(azure_client_id="client", azure_tenant_id="tenant")


@pytest.mark.parametrize(
    ("creds", "module", "message"),
    [
        pytest.param(None, "botocore.session", "AWS IAM authentication needs the botocore package", id="aws"),
        pytest.param(GCP, "google.auth", "Google Cloud IAM authentication needs the google-auth package", id="gcp"),
        pytest.param(AZURE, "azure.identity", "Azure IAM authentication needs the azure-identity package", id="azure"),
    ],
)
def test_a_missing_sdk_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, creds: Any, module: str, message: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it raises ImportError
    extra = {"botocore.session": "aws", "google.auth": "gcp", "azure.identity": "azure"}[module]
    with pytest.raises(IAMError) as info:
        token_for(creds or aws_creds(), user=USER, host=HOST, port=PORT)
    assert str(info.value).startswith(message)
    assert str(info.value).endswith(f"pip install 'materialize-postgres[{extra}]'")
