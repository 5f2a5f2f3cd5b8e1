"""Training: the family dispatch, the Ray Train loop (local or on a cluster) and Ray Jobs submission."""
