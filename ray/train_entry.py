"""Ray job entry point: fine-tune a harmguard transformer on the cluster this job runs in.

Submitted by `harmguard run --family transformer --ray-address http://HOST:8265` (see harmguard.ray_jobs); the
input config and the results live under the gs:// work folder. No logic here: it parses arguments and calls the
library.
"""

import argparse

from harmguard.ray_jobs import run_entry

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="gs:// work folder with input/loop_config.json")
    parser.add_argument("--name", default="train", help="Ray Train run name under the work folder")
    args = parser.parse_args()
    run_entry(args.workdir, args.name)
