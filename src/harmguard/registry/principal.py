"""Who is acting: the authenticated principal behind a registration, approval, rejection, promotion or rollback.

A display name (``--by``) is free text and proves nothing; the two-person rule compares principals. The principal is
taken from the strongest source this process has, in this order:

1. **In a Kubernetes pod** (a service-account token is mounted): the human the platform authenticated, when the
   pipeline hands it over in the environment: ``KUBEFLOW_USERID`` (the ``kubeflow-userid`` header of a multi-user
   Kubeflow, which its auth proxy sets) or ``ARGO_WORKFLOW_CREATOR`` (the ``workflows.argoproj.io/creator`` label
   Argo Server sets from the submitter's token). Else the pod's service account: the ``sub`` claim of its token
   (``system:serviceaccount:<namespace>:<name>``). These variables count only inside a pod: on a workstation anyone
   can set them.
2. **With a gs:// home**: the Google account of Application Default Credentials (the identity the bucket's IAM
   actually checks): a service-account key's ``client_email``, an impersonated account, or the ``account`` that
   ``gcloud auth application-default login`` records.
3. **Otherwise**: the operating-system account of the process (from its uid, not from ``$USER``, which anyone sets).

What this does not do: verify signatures. The token and the ADC file were put there by the platform, and whoever can
rewrite them can also rewrite a local home; a ``gs://`` home's IAM is what stops a principal it does not trust.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SA_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
# Environment variables a pipeline sets from an authenticated source (see the module docstring), strongest first.
PLATFORM_USER_VARS = (("KUBEFLOW_USERID", "kubeflow"), ("ARGO_WORKFLOW_CREATOR", "argo"))
GCLOUD_ADC = Path("~/.config/gcloud/application_default_credentials.json")


@dataclass(frozen=True)
class Principal:
    """An authenticated identity."""

    id: str  # "<source>:<name>", compared by the two-person rule
    source: str  # kubeflow, argo, k8s, gcp or unix
    name: str  # the account name, the default display name

    def __str__(self) -> str:
        return self.id


def _jwt_subject(token: str) -> str | None:
    """The ``sub`` claim of a JWT's payload (no signature check: the kubelet mounted it)."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) and sub.strip() else None


def _adc_account(environ: Mapping[str, str], home: Path) -> str | None:
    """The account named by the Application Default Credentials file, without a network call."""
    explicit = environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    path = Path(explicit) if explicit else home / GCLOUD_ADC.relative_to("~")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    for key in ("client_email", "account"):  # a service-account key; gcloud's user login
        if isinstance(doc.get(key), str) and doc[key].strip():
            return str(doc[key]).strip()
    url = doc.get("service_account_impersonation_url")  # .../serviceAccounts/<email>:generateAccessToken
    if isinstance(url, str) and "/serviceAccounts/" in url:
        return url.rsplit("/serviceAccounts/", 1)[1].split(":", 1)[0] or None
    return None


def _os_account(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a container uid with no passwd entry
        return f"uid-{uid}"


def current_principal(
    *,
    gcs_home: bool = False,
    environ: Mapping[str, str] | None = None,
    sa_token: Path | None = None,
    user_home: Path | None = None,
    uid: int | None = None,
) -> Principal:
    """The principal of this process (see the module docstring for the order).

    Args:
        gcs_home: The home is ``gs://``: Application Default Credentials identify the caller to the bucket.
        environ: The environment (default ``os.environ``).
        sa_token: The service-account token file (default the in-pod mount point).
        user_home: Home folder holding gcloud's ADC file (default ``~``).
        uid: The uid (default the process's).
    """
    environ = os.environ if environ is None else environ
    token_path = SA_TOKEN if sa_token is None else sa_token
    try:
        token = token_path.read_text()
    except OSError:
        token = None
    if token is not None:
        for var, source in PLATFORM_USER_VARS:
            value = (environ.get(var) or "").strip()
            if value and value.isprintable():
                return Principal(f"{source}:{value}", source, value)
        sub = _jwt_subject(token)
        if sub:
            return Principal(f"k8s:{sub}", "k8s", sub)
    if gcs_home and not environ.get("STORAGE_EMULATOR_HOST"):
        account = _adc_account(environ, Path.home() if user_home is None else user_home)
        if account:
            return Principal(f"gcp:{account}", "gcp", account)
    name = _os_account(os.getuid() if uid is None else uid)
    return Principal(f"unix:{name}", "unix", name)


def principal_for(store_uri: str) -> Principal:
    """The principal acting on a store (``gs://`` homes count Application Default Credentials)."""
    return current_principal(gcs_home=store_uri.startswith("gs://"))
