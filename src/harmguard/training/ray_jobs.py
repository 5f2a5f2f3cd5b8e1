"""Training on a remote Ray cluster: submit `ray/train_entry.py` through the Ray Jobs API and wait for it.

A remote cluster cannot read this machine's files, so the training input and the checkpoints live under a
``gs://`` work folder: the driver writes ``<workdir>/input/loop_config.json``, the job trains with Ray Train (its
storage is ``<workdir>``) and writes the best checkpoint and the run's state to ``<workdir>/result/``, which the
driver then downloads.
"""

from __future__ import annotations

import json
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

from harmguard.storage.gcs import arrow_filesystem

# The job's entry point resolves from the harmguard installed on the cluster (the image): nothing is uploaded.
ENTRY_MODULE = "harmguard.training.job_entry"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
SUBMIT_DEADLINE_S = 120.0  # how long a head may take to bring its job agent up


class RemoteTrainingError(RuntimeError):
    """The remote training job could not be submitted or did not succeed; the message carries its reason and logs."""


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

    filesystem, root = arrow_filesystem(workdir)
    filesystem.create_dir(f"{root}/input", recursive=True)
    with filesystem.open_output_stream(f"{root}/input/loop_config.json") as out:
        out.write(json.dumps(config).encode())
    client = JobSubmissionClient(address)
    job_id = _submit(
        client,
        entrypoint=f"python -m {ENTRY_MODULE} --workdir {shlex.quote(workdir)} --name {shlex.quote(name)}",
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
