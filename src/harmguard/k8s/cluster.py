"""What a compiled pipeline asks of a Kubernetes cluster: the image, GPU nodes, settings, GCS credentials, retries.

Pipelines call :func:`configure_step` on each task (static settings: node pools, secret and ConfigMap names);
the image is the one setting read at compile time (``HARMGUARD_IMAGE`` / ``Settings.image``) and stamped into every
executor by :func:`with_image`, so a compiled YAML names exactly one image. ``kfp.local`` ignores all of it: the
platform config (``kfp.kubernetes``), resources and retries only take effect on a KFP backend.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harmguard.k8s.common import GCS_MOUNT_PATH, LAUNCHER, RAY_CLIENT_LABEL

IMAGE_ENV = "HARMGUARD_IMAGE"  # also set inside every step, so lineage records the image the step really ran in


class Toleration(BaseModel):
    """A Kubernetes toleration (the fields kfp.kubernetes.add_toleration takes)."""

    model_config = ConfigDict(frozen=True)

    key: str = Field(description="Taint key the toleration matches.")
    operator: str = Field(default="Exists", description="Exists or Equal.")
    value: str | None = Field(default=None, description="Taint value (operator Equal only).")
    effect: str = Field(default="NoSchedule", description="NoSchedule, PreferNoSchedule or NoExecute.")


class ClusterConfig(BaseModel):
    """Cluster placement of the pipeline steps; the defaults match a GKE cluster with an L4 GPU node pool."""

    model_config = ConfigDict(frozen=True)

    accelerator_type: str = Field(default="nvidia.com/gpu", description="Extended resource a training step asks for.")
    accelerator_count: int = Field(default=1, ge=1, description="GPUs per training step.")
    gpu_node_selector: dict[str, str] = Field(
        default={"cloud.google.com/gke-accelerator": "nvidia-l4"},
        description="Node labels a GPU step must land on (the GPU node pool).",
    )
    gpu_tolerations: tuple[Toleration, ...] = Field(
        default=(Toleration(key="nvidia.com/gpu"),),
        description="Taints of the GPU node pool a GPU step tolerates (GKE taints GPU nodes nvidia.com/gpu).",
    )
    settings_config_map: str = Field(
        default="harmguard-settings",
        description="ConfigMap whose keys become the steps' environment (HARMGUARD_HOME, MLFLOW_TRACKING_URI).",
    )
    settings_keys: tuple[str, ...] = Field(
        default=("HARMGUARD_HOME", "MLFLOW_TRACKING_URI"), description="Keys of the settings ConfigMap."
    )
    gcs_secret: str = Field(
        default="harmguard-gcs",
        description="Secret holding the GCS service account key as `key.json` (empty: rely on Workload Identity).",
    )
    gcs_mount_path: str = Field(default=GCS_MOUNT_PATH, description="Where the key Secret is mounted.")
    training_service_account: str = Field(
        default="harmguard-training",
        description="ServiceAccount of training RayJob pods (Workload Identity: the pipelines' GCP account).",
    )
    serving_service_account: str = Field(
        default="harmguard-serving",
        description="ServiceAccount of the RayService pods (Workload Identity: a GCP account that reads models and "
        "the registry and writes only traffic/ and review/).",
    )
    serving_namespace: str = Field(
        default="harmguard",
        description="Namespace of the classifier's RayService, which promotion's deploy step patches "
        "(HARMGUARD_NAMESPACE overrides it at run time).",
    )
    pipelines_service_account: str = Field(
        default="pipeline-runner",
        description="ServiceAccount the KFP pipeline steps run as (KFP's default; `harmguard submit "
        "--service-account` may name another): the deploy Role is bound to it.",
    )
    pipelines_namespace: str = Field(
        default="kubeflow", description="Namespace of that ServiceAccount (the KFP runs' namespace)."
    )
    deploy_deadline_s: int = Field(
        default=600,
        ge=1,
        description="How long promotion's deploy step waits for KubeRay to report the new user_config running.",
    )
    ray_training_token_secret: str = Field(
        default="harmguard-ray-training-token",
        description="Secret (key `auth_token`) with the Ray auth token of training clusters; the launcher step "
        "reads driver logs with it (RAY_AUTH_TOKEN).",
    )
    retries: int = Field(default=3, ge=0, description="Retries of a step that talks to the network.")
    backoff: str = Field(default="30s", description="First retry delay (KFP duration).")
    backoff_factor: float = Field(default=2.0, ge=1.0, description="Growth of the delay between retries.")
    backoff_max: str = Field(default="600s", description="Longest delay between retries.")


CLUSTER = ClusterConfig()


def configure_step(
    task: Any,
    *,
    gpu: bool = False,
    network: bool = False,
    cache: bool = True,
    ray_client: bool = False,
    config: ClusterConfig = CLUSTER,
) -> Any:
    """Apply the cluster settings to one pipeline task and return it.

    Args:
        task: The ``PipelineTask``.
        gpu: The step itself trains: one GPU, on the GPU node pool.
        network: The step talks to services (data sources, Kubernetes API, MLflow): retried with backoff.
        cache: False for steps that read the outside world (their inputs do not determine their result).
        ray_client: The step launches a training RayJob and reads its dashboard: the pod label the training
            NetworkPolicy admits on port 8265 and ``RAY_AUTH_TOKEN`` from the training token Secret.
        config: Node pools, secret and ConfigMap names.
    """
    from kfp import kubernetes

    kubernetes.use_config_map_as_env(
        task, config_map_name=config.settings_config_map, config_map_key_to_env={k: k for k in config.settings_keys}
    )
    if config.gcs_secret:
        kubernetes.use_secret_as_volume(task, secret_name=config.gcs_secret, mount_path=config.gcs_mount_path)
        task.set_env_variable("GOOGLE_APPLICATION_CREDENTIALS", f"{config.gcs_mount_path}/key.json")
    if ray_client:
        kubernetes.add_pod_label(task, label_key=RAY_CLIENT_LABEL, label_value=LAUNCHER)
        kubernetes.use_secret_as_env(
            task, secret_name=config.ray_training_token_secret, secret_key_to_env={"auth_token": "RAY_AUTH_TOKEN"}
        )
    if gpu:
        task.set_accelerator_type(config.accelerator_type).set_accelerator_limit(config.accelerator_count)
        for label, value in config.gpu_node_selector.items():
            kubernetes.add_node_selector(task, label_key=label, label_value=value)
        for t in config.gpu_tolerations:
            kubernetes.add_toleration(task, key=t.key, operator=t.operator, value=t.value, effect=t.effect)
    if network and config.retries:
        task.set_retry(
            num_retries=config.retries,
            backoff_duration=config.backoff,
            backoff_factor=config.backoff_factor,
            backoff_max_duration=config.backoff_max,
        )
    if not cache:
        task.set_caching_options(False)
    return task


def with_image(pipeline_spec: Any, image: str) -> Any:
    """A copy of a compiled ``PipelineSpec`` whose every container runs ``image`` (and knows it, as HARMGUARD_IMAGE).

    Components are declared with the default image at import; the tag actually deployed is a setting, read when
    compiling or submitting, so it replaces the image here rather than in the decorators.
    """
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    if not image or any(c.isspace() for c in image) or image.endswith(":latest"):
        raise ValueError(f"image must be a pinned tag or digest (not empty, no spaces, not :latest), got {image!r}")
    spec = pipeline_spec_pb2.PipelineSpec()
    spec.CopyFrom(pipeline_spec)
    deployment = json_format.MessageToDict(spec.deployment_spec)
    for executor in deployment.get("executors", {}).values():
        container = executor.get("container")
        if container is None:  # importers and other non-container executors
            continue
        container["image"] = image
        env = [e for e in container.get("env", []) if e.get("name") != IMAGE_ENV]
        container["env"] = [*env, {"name": IMAGE_ENV, "value": image}]
    spec.deployment_spec.Clear()
    spec.deployment_spec.update(deployment)
    return spec


def executor_images(pipeline_doc: dict[str, Any]) -> dict[str, str]:
    """Executor name -> image of a compiled pipeline document (the first YAML document)."""
    executors = pipeline_doc.get("deploymentSpec", {}).get("executors", {})
    return {name: ex["container"]["image"] for name, ex in executors.items() if "container" in ex}
