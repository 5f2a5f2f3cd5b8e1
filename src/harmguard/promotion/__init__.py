"""Approval and promotion: human decisions bound to the artifact, promotion checks, golden files, deployment."""
