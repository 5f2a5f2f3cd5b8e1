"""Runners above the pipeline layer: local execution through ``kfp.local``, compilation and submission to KFP."""
