"""The online endpoint: Ray Serve deployments over the same ``SegEngine`` and tracker.

``app.build_app(args)`` is the Serve application (``serve run hqseg_ray.serve.app:build_app``);
``client.segment_chunk_via_serve`` lets a bulk job run its segment stage on a running deployment.
Importing this package imports neither Ray nor torch.
"""

ENGINE_DEPLOYMENT = "SegEngineDeployment"
API_DEPLOYMENT = "HQSegAPI"

__all__ = ["ENGINE_DEPLOYMENT", "API_DEPLOYMENT"]
