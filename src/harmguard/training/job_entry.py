"""The Ray job's side of remote training: train from the uploaded config, upload the best checkpoint and state.

Run inside the cluster as ``python -m harmguard.training.job_entry --workdir gs://... --name train`` (submitted by
``training.ray_jobs.run_remote_job`` or a KubeRay RayJob); it resolves from the installed package, so it runs from
the image or any environment with harmguard installed, never from a source checkout.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from harmguard.storage.gcs import arrow_filesystem
from harmguard.training.ray_train import fit_with_ray


def run_entry(workdir: str, name: str) -> None:
    """The job's side (inside the cluster): train from the uploaded config, upload the best checkpoint and state."""
    from pyarrow import fs as pafs  # lazy: pyarrow's filesystem layer

    filesystem, root = arrow_filesystem(workdir)
    with filesystem.open_input_stream(f"{root}/input/loop_config.json") as f:
        config = json.loads(f.read())
    outcome = fit_with_ray(config, storage_path=workdir, name=name)
    (outcome.best_checkpoint / "run_state.json").write_text(json.dumps(outcome.state))
    pafs.copy_files(str(outcome.best_checkpoint), f"{root}/result", destination_filesystem=filesystem)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the job's arguments and run it."""
    parser = argparse.ArgumentParser(description="Fine-tune a harmguard transformer on the Ray cluster of this job.")
    parser.add_argument("--workdir", required=True, help="gs:// work folder with input/loop_config.json")
    parser.add_argument("--name", default="train", help="Ray Train run name under the work folder")
    args = parser.parse_args(argv)
    run_entry(args.workdir, args.name)


if __name__ == "__main__":
    main()
