"""The exit codes of every `harmguard` command (CONTRACTS.md), so scripts and Argo can tell failures apart.

Only ``UNEXPECTED`` is worth retrying: the Argo templates retry on it (and on pod errors: eviction, OOM kill), never
on a usage error, a refusal or invalid input, which would fail the same way again.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a command's exit status means."""

    OK = 0
    UNEXPECTED = 1  # a bug or an outage (a traceback, a step that crashed): the only code worth retrying
    USAGE = 2  # Click's: an unknown option, a bad option value, a name that names nothing
    REJECTED = 3  # a check said no: the gate rejected, an approval or promotion was refused
    INVALID_INPUT = 4  # the input is wrong: data validation failed, a malformed policy, label or input file


# Argo's retryStrategy.expression: retry what may pass on a second try. `Error` is a pod-level failure (evicted,
# lost node); 137 is a container killed by SIGKILL (OOM), 143 by SIGTERM (preemption, node drain).
RETRYABLE_EXPRESSION = 'lastRetry.status == "Error" || asInt(lastRetry.exitCode) in [1, 137, 143]'
