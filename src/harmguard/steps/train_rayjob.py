"""The ``rayjob`` training backend's step: launch a KubeRay RayJob, wait for it, export its model."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harmguard.data.snapshot import read_snapshot_file
from harmguard.digests import model_digest
from harmguard.k8s.rayjob import RayJobLauncher, build_training_rayjob, current_namespace, custom_objects_api
from harmguard.policy import load_policy
from harmguard.registry.runs import record
from harmguard.steps.context import step_context
from harmguard.training.ray_train import TrainOutcome, build_loop_config, effective_spec, load_outcome_model


def train_rayjob_step(
    policy_ref: str,
    family: str,
    snapshot_path: str,
    seed: int,
    run_id: str,
    model_dir: str,
    train_config: str = "",
    *,
    workers: int = 2,
    gpu_per_worker: int = 1,
    deadline_s: int = 6 * 3600,
    poll_s: float = 10.0,
    api: Any = None,
) -> str:
    """The ``rayjob`` backend's train step: launch, wait, export. Returns the model digest.

    Raises:
        ValueError: For a family other than ``transformer`` or a home that a cluster cannot reach.
        RayJobError: When the RayJob fails or overruns ``deadline_s``.
    """
    from pyarrow import fs as pafs

    if family != "transformer":
        raise ValueError(f"the rayjob backend trains the transformer family (Ray Train), not {family!r}: use inline")
    settings, store = step_context()
    if not settings.home.startswith("gs://"):
        raise ValueError(f"HARMGUARD_HOME={settings.home}: a RayJob reads and writes gs:// only, set a gs:// home")
    policy = load_policy(policy_ref)
    options = json.loads(train_config) if train_config else {}
    options.setdefault("num_workers", workers)
    options.setdefault("use_gpu", gpu_per_worker > 0)
    config = build_loop_config(read_snapshot_file(snapshot_path), policy, effective_spec(policy, options), seed)
    workdir = store.uri_for(f"runs/{run_id}/rayjob")
    filesystem, root = pafs.FileSystem.from_uri(workdir)
    filesystem.create_dir(f"{root}/input", recursive=True)
    with filesystem.open_output_stream(f"{root}/input/loop_config.json") as out:
        out.write(json.dumps(config).encode())
    namespace = current_namespace(settings.namespace)
    manifest = build_training_rayjob(
        run_id=run_id,
        namespace=namespace,
        image=settings.image,
        workdir=workdir,
        workers=workers,
        gpu_per_worker=gpu_per_worker,
        deadline_s=deadline_s,
    )
    launcher = RayJobLauncher(api or custom_objects_api(settings.kube_api), namespace, poll_s)
    final = launcher.run(manifest, deadline_s=deadline_s)
    local = Path(tempfile.mkdtemp(prefix="harmguard-rayjob-"))
    pafs.copy_files(f"{root}/result", str(local), source_filesystem=filesystem)
    state = json.loads((local / "run_state.json").read_text())
    outcome = TrainOutcome(best_checkpoint=local, state=state, extra={"rayjob": manifest["metadata"]["name"]})
    model = load_outcome_model(outcome, config, policy.categories)
    out = Path(model_dir)
    if out.exists():
        shutil.rmtree(out)
    model.save(out)
    digest = model_digest(out)
    info = {**model.train_info, "rayjob": {"name": manifest["metadata"]["name"], "namespace": namespace, **final}}
    record(store, run_id, "train", {"family": family, "model_digest": digest, "seed": seed, "options": options, **info})
    return digest
