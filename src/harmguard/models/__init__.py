"""Models: the classifier protocol, baseline and transformer families, loading by digest, one decide()."""
