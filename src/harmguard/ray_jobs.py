"""Training on a remote Ray cluster: submit `ray/train_entry.py` through the Ray Jobs API and wait for it.

A remote cluster cannot read this machine's files, so the training input and the checkpoints live under a
``gs://`` work folder: the driver writes ``<workdir>/input/loop_config.json``, the job trains with Ray Train (its
storage is ``<workdir>``) and writes the best checkpoint and the run's state to ``<workdir>/result/``, which the
driver then downloads.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

ENTRYPOINT = Path(__file__).resolve().parents[2] / "ray" / "train_entry.py"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
SUBMIT_DEADLINE_S = 120.0  # how long a head may take to bring its job agent up


class RemoteTrainingError(RuntimeError):
    """The remote training job could not be submitted or did not succeed; the message carries its reason and logs."""


def _fs(uri: str) -> tuple[Any, str]:
    from harmguard.gcs import arrow_filesystem

    return arrow_filesystem(uri)


def _submit(client: Any, *, deadline_s: float = SUBMIT_DEADLINE_S, **job: Any) -> str:
    """Submit, retrying while the head answers that its job agent is not up yet (a fresh or restarting head)."""
    give_up = time.monotonic() + deadline_s
    delay = 1.0
    while True:
        try:
            return str(client.submit_job(**job))
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() + delay > give_up:
                raise RemoteTrainingError(f"the Ray cluster refused the training job: {e}") from e
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


def run_remote_job(config: dict[str, Any], *, address: str, workdir: str, name: str, poll_s: float = 5.0) -> Path:
    """Submit the training job to ``address`` (http://HOST:8265), stream its logs, return the local result folder."""
    if not workdir.startswith("gs://"):
        raise RemoteTrainingError(
            f"a remote Ray cluster ({address}) needs gs:// storage for data and checkpoints, but the run's work "
            f"folder is {workdir}: set HARMGUARD_HOME to a gs:// URI"
        )
    from pyarrow import fs as pafs
    from ray.job_submission import JobSubmissionClient

    filesystem, root = _fs(workdir)
    filesystem.create_dir(f"{root}/input", recursive=True)
    with filesystem.open_output_stream(f"{root}/input/loop_config.json") as out:
        out.write(json.dumps(config).encode())
    client = JobSubmissionClient(address)
    job_id = _submit(
        client,
        entrypoint=f"python train_entry.py --workdir {workdir} --name {name}",
        runtime_env={"working_dir": str(ENTRYPOINT.parent)},  # only the thin entry point travels
    )
    printed = 0
    while (status := str(client.get_job_status(job_id)).rsplit(".", 1)[-1]) not in TERMINAL:
        logs = client.get_job_logs(job_id)
        print(logs[printed:], end="", flush=True)  # the progress lines reach the CLI like local ones
        printed = len(logs)
        time.sleep(poll_s)
    logs = client.get_job_logs(job_id)
    print(logs[printed:], end="", flush=True)
    if status != "SUCCEEDED":
        info = client.get_job_info(job_id)
        tail = "\n".join(logs.splitlines()[-30:])
        raise RemoteTrainingError(f"Ray job {job_id} {status}: {info.message}\n{tail}")
    local = Path(tempfile.mkdtemp(prefix="harmguard-remote-"))
    pafs.copy_files(f"{root}/result", str(local), source_filesystem=filesystem)
    return local


def run_entry(workdir: str, name: str) -> None:
    """The job's side (inside the cluster): train from the uploaded config, upload the best checkpoint and state."""
    from pyarrow import fs as pafs

    from harmguard.train_ray import fit_with_ray

    filesystem, root = _fs(workdir)
    with filesystem.open_input_stream(f"{root}/input/loop_config.json") as f:
        config = json.loads(f.read())
    outcome = fit_with_ray(config, storage_path=workdir, name=name)
    (outcome.best_checkpoint / "run_state.json").write_text(json.dumps(outcome.state))
    pafs.copy_files(str(outcome.best_checkpoint), f"{root}/result", destination_filesystem=filesystem)
