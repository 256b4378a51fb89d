"""Integration fixtures in one place: a real S3 endpoint (moto's server over HTTP on
127.0.0.1: ``s3_server``, ``s3_env``, ``s3_proxy``) and a local multi-node Ray cluster with
token auth (``ray_cluster.LocalRayCluster``, ``cluster_with_s3``)."""

import pytest
from ray_cluster import LocalRayCluster, cluster_with_s3, job_id_from  # noqa: F401
from s3_server import s3_env, s3_proxy, s3_server  # noqa: F401


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster: a head (drivers only, 1 CPU) and a worker node (2 CPUs) on
    127.0.0.1 with token auth, one per test module that asks for it."""
    c = LocalRayCluster(head_cpus=1, worker_cpus=2)
    try:
        c.start()
        yield c
    finally:
        c.stop()
