"""Ray job entry point: fine-tune a harmguard transformer on the cluster this job runs in.

A thin wrapper for ``ray job submit -- python ray/train_entry.py --workdir gs://... --name train``; harmguard itself
submits ``python -m harmguard.training.job_entry`` (the same function, resolved from the installed package).
"""

from harmguard.training.job_entry import main

if __name__ == "__main__":
    main()
