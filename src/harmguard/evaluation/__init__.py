"""Evaluation on frozen data: metrics, calibration, fairness, functional tests, evasion, significance, the gate."""
