#!/usr/bin/env python3
"""Upload and download one file the way the File API upload guide does it.

Usage: guide_requests.py HOST ORG WORKSPACE TOKEN [FILE_PATH]
(each argument may also come from EVO_HOST, EVO_ORG, EVO_WORKSPACE, EVO_TOKEN).
HOST is the hub URL, e.g. http://127.0.0.1:8080. Prints one JSON line with the
registered and final metadata and the downloaded size. Exits non-zero on error.
"""
import json
import os
import sys
import tempfile
import time

import requests


def arg(i, env):
    if len(sys.argv) > i:
        return sys.argv[i]
    value = os.environ.get(env)
    if not value:
        sys.exit(f"missing argument {i} or ${env}")
    return value


service_host = arg(1, "EVO_HOST").rstrip("/")
org_uuid = arg(2, "EVO_ORG")
workspace_uuid = arg(3, "EVO_WORKSPACE")
token = arg(4, "EVO_TOKEN")
file_path = sys.argv[5] if len(sys.argv) > 5 else "guide/path_to_my_file.txt"
headers = {"Authorization": f"Bearer {token}"}

# A local file to upload.
local = tempfile.NamedTemporaryFile(delete=False, suffix=".txt")
local.write(b"Hello from the upload guide!\n" * 7)
local.close()

# 1. Get a blob storage URL.
url = f"{service_host}/file/v2/orgs/{org_uuid}/workspaces/{workspace_uuid}/files/path/{file_path}"
upload_link_response = requests.put(url, headers=headers)
upload_link_response.raise_for_status()
upload_link_response = upload_link_response.json()

# 2. Upload the data blob (the guide sends a multipart form; storage keeps the body as sent).
with open(local.name, "rb") as fh:
    upload_file = {f"{upload_link_response['file_id']}": fh}
    upload_response = requests.put(
        upload_link_response["upload"],
        files=upload_file,
        headers={"x-ms-blob-type": "BlockBlob"},
    )
if upload_response.status_code != 201:
    sys.exit(f"upload failed: {upload_response.status_code} {upload_response.text}")

# 3. Poll until the file is ready (the version we registered is the latest).
result = None
for _ in range(100):
    file = requests.get(url, headers=headers)
    if file.status_code == 200:
        result = file.json()
        if str(result["version_id"]) == str(upload_link_response["version_id"]):
            break
    elif file.status_code != 404:
        sys.exit(f"get failed: {file.status_code} {file.text}")
    time.sleep(0.1)
else:
    sys.exit("file never became ready")

# 4. Download it through the pre-signed URL.
download = requests.get(result["download"])
download.raise_for_status()
os.unlink(local.name)

print(json.dumps({
    "file_id": upload_link_response["file_id"],
    "version_id": str(upload_link_response["version_id"]),
    "name": result["name"],
    "path": result["path"],
    "size": result["size"],
    "downloaded": len(download.content),
    "content_md5": upload_response.headers.get("Content-MD5"),
}))
