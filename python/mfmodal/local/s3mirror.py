"""Copy a bucket of the local S3 server to a directory and back.

moto keeps objects in memory only, so mfmodal-local saves the bucket after
each command and restores it before the next one.  That is how `resume`,
`logs` and the Metaflow client see earlier runs.  Object metadata
(Metaflow stores `metaflow-user-attributes` there) goes to an index file.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict

log = logging.getLogger("mfmodal.local")

INDEX_NAME = "metadata.json"


def _local_path(directory: str, key: str) -> str:
    """Return the file for key under directory, or raise ValueError if key would leave it."""
    path = os.path.normpath(os.path.join(directory, key))
    if os.path.commonpath([directory, path]) != directory or key.endswith("/"):
        raise ValueError("object key %r has no file under %s" % (key, directory))
    return path


def save_bucket(client, bucket: str, directory: str) -> int:
    """Write every object of bucket to directory/objects and return how many."""
    objects_dir = os.path.abspath(os.path.join(directory, "objects"))
    os.makedirs(objects_dir, exist_ok=True)
    index: Dict[str, Dict[str, str]] = {}
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            key = item["Key"]
            try:
                path = _local_path(objects_dir, key)
            except ValueError as exc:
                log.warning("not saved: %s", exc)
                continue
            response = client.get_object(Bucket=bucket, Key=key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(response["Body"].read())
            if response.get("Metadata"):
                index[key] = response["Metadata"]
            count += 1
    with open(os.path.join(directory, INDEX_NAME), "w", encoding="utf-8") as handle:
        json.dump(index, handle, indent=1, sort_keys=True)
    return count


def restore_bucket(client, bucket: str, directory: str) -> int:
    """Upload what save_bucket wrote under directory and return how many objects."""
    objects_dir = os.path.abspath(os.path.join(directory, "objects"))
    if not os.path.isdir(objects_dir):
        return 0
    index: Dict[str, Dict[str, str]] = {}
    index_path = os.path.join(directory, INDEX_NAME)
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as handle:
            index = json.load(handle)
    count = 0
    for root, _, files in os.walk(objects_dir):
        for name in files:
            path = os.path.join(root, name)
            key = os.path.relpath(path, objects_dir).replace(os.sep, "/")
            with open(path, "rb") as handle:
                client.put_object(Bucket=bucket, Key=key, Body=handle.read(),
                                  Metadata=index.get(key, {}))
            count += 1
    return count
