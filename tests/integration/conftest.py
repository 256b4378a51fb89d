"""Integration fixtures in one place: a real S3 endpoint (moto's server over HTTP on
127.0.0.1: ``s3_server``, ``s3_env``, ``s3_proxy``) and a local multi-node Ray cluster with
token auth (``ray_cluster.LocalRayCluster``, ``cluster_with_s3``)."""

from ray_cluster import LocalRayCluster, cluster_with_s3, job_id_from  # noqa: F401
from s3_server import s3_env, s3_proxy, s3_server  # noqa: F401
