"""S3-compatible storage (boto3) and its local fallback: move bytes, verified.

The package only moves bytes: folders and small documents to and from a local path or an
``s3://`` prefix, each object checked against its SHA-256. What the bytes mean (a bundle, a
prepared dataset, an experiment's results) belongs to the layers above (``monolith.bundle``,
``monolith.data``, ``monolith.experiment``).

- ``settings``: ``StorageSettings``, the config's ``storage:`` section (no credentials);
- ``client``: the boto3 client cache, and what boto errors mean;
- ``bucket``: one bucket: list, read, delete, download, and the verified upload engine;
- ``folders``: the folder API the rest of the code calls;
- ``digest``: a file's SHA-256.

Credentials come only from the standard boto3 chain (environment, profile, web identity).
"""

from monolith.storage.bucket import Bucket, LocalFile, ObjectInfo
from monolith.storage.client import s3_client
from monolith.storage.digest import SHA256_METADATA, sha256_file
from monolith.storage.folders import (
    check_access,
    delete_prefix,
    download_directory,
    fill_folder,
    list_objects,
    object_info,
    read_json,
    read_object,
    upload_directory,
    write_bytes,
    write_json,
)
from monolith.storage.settings import StorageSettings, aws_environment_digest

__all__ = [
    "SHA256_METADATA",
    "Bucket",
    "LocalFile",
    "ObjectInfo",
    "StorageSettings",
    "aws_environment_digest",
    "check_access",
    "delete_prefix",
    "download_directory",
    "fill_folder",
    "list_objects",
    "object_info",
    "read_json",
    "read_object",
    "s3_client",
    "sha256_file",
    "upload_directory",
    "write_bytes",
    "write_json",
]
