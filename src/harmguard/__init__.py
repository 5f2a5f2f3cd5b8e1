"""harmguard: retraining and serving for Trust & Safety classifiers."""

__version__ = "0.1.0"
