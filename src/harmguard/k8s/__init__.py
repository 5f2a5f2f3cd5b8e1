"""Kubernetes: Argo and KubeRay manifests, cluster settings, the RayJob launcher, offline CRD validation."""
