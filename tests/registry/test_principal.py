"""Who is acting: the principal from a pod's identity, Application Default Credentials, or the OS account."""

from __future__ import annotations

import base64
import json
import os
import pwd
from pathlib import Path

from harmguard.registry.principal import current_principal


def jwt(claims: dict) -> str:
    def part(doc: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def test_outside_a_pod_the_os_account_counts_not_user_or_platform_variables(tmp_path: Path) -> None:
    environ = {"USER": "mallory", "LOGNAME": "mallory", "KUBEFLOW_USERID": "boss@example.com"}
    who = current_principal(environ=environ, sa_token=tmp_path / "no-token")
    me = pwd.getpwuid(os.getuid()).pw_name
    assert (who.id, who.source, who.name) == (f"unix:{me}", "unix", me)


def test_in_a_pod_the_platform_user_then_the_service_account(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(jwt({"sub": "system:serviceaccount:harmguard:harmguard-argo", "iss": "k8s"}))
    assert current_principal(environ={}, sa_token=token).id == "k8s:system:serviceaccount:harmguard:harmguard-argo"
    argo = current_principal(environ={"ARGO_WORKFLOW_CREATOR": "alice"}, sa_token=token)
    assert argo.id == "argo:alice"
    kubeflow = current_principal(environ={"KUBEFLOW_USERID": "bob@example.com", "ARGO_WORKFLOW_CREATOR": "alice"},
                                 sa_token=token)  # fmt: skip
    assert kubeflow.id == "kubeflow:bob@example.com"
    # a value with control characters is not an identity
    assert current_principal(environ={"KUBEFLOW_USERID": "bob\nroot"}, sa_token=token).source == "k8s"


def test_a_gs_home_counts_the_adc_account(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"type": "service_account", "client_email": "trainer@p.iam.gserviceaccount.com"}))
    no_pod = tmp_path / "no-token"
    env = {"GOOGLE_APPLICATION_CREDENTIALS": str(key)}
    assert current_principal(gcs_home=True, environ=env, sa_token=no_pod).id == "gcp:trainer@p.iam.gserviceaccount.com"
    assert current_principal(gcs_home=False, environ=env, sa_token=no_pod).source == "unix"  # a local home: the OS
    gcloud = tmp_path / "home" / ".config" / "gcloud"
    gcloud.mkdir(parents=True)
    (gcloud / "application_default_credentials.json").write_text(
        json.dumps({"type": "authorized_user", "account": "carol@example.com", "refresh_token": "x"})
    )
    who = current_principal(gcs_home=True, environ={}, sa_token=no_pod, user_home=tmp_path / "home")
    assert who.id == "gcp:carol@example.com"
    # against the emulator there is no Google identity
    emulator = {**env, "STORAGE_EMULATOR_HOST": "http://127.0.0.1:1"}
    assert current_principal(gcs_home=True, environ=emulator, sa_token=no_pod).source == "unix"
