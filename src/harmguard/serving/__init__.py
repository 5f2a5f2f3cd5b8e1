"""Online serving with Ray Serve (issue #7).

- ``harmguard.serving.app:build_app``: the Serve application builder (the import path a RayService uses).
- ``harmguard.serving.config``: typed limits, batching and the ``user_config`` a replica applies in ``reconfigure``.
- ``harmguard.serving.model``: Ray-free loading, digest verification and batch scoring (champion and shadow).
- ``harmguard.serving.local``: ``harmguard serve`` on this machine (endpoint file, admin route, stop).

Decisions are ``harmguard.models.decide.decide``, shared with batch scoring and promotion.
"""
