"""The KFP steps as library functions: each component in ``harmguard.components`` calls one of these."""
