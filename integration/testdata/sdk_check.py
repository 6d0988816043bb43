"""Drives Seequent's official Python SDK (evo-files) against a File API.

    sdk_check.py suite WORKDIR          the whole client surface; prints "ok"
    sdk_check.py upload PATH SRC        upload SRC as PATH (a new version if it exists)
    sdk_check.py download PATH DST      download PATH's latest version to DST

The service comes from the environment: EVO_HUB (https://HOST, no port),
EVO_ORG, EVO_WORKSPACE, EVO_TOKEN. Every byte is compared by sha256.
"""

import asyncio
import hashlib
import os
import sys
from uuid import UUID

from evo.aio import AioTransport
from evo.common import APIConnector, Environment
from evo.files import FileAPIClient
from evo.oauth import AccessTokenAuthorizer


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def check(cond, what):
    if not cond:
        raise AssertionError(what)


class Env:
    def __init__(self):
        hub = os.environ["EVO_HUB"]
        self.transport = AioTransport(user_agent="evofs-sdk-check")
        env = Environment(hub_url=hub, org_id=UUID(os.environ["EVO_ORG"]),
                          workspace_id=UUID(os.environ["EVO_WORKSPACE"]))
        conn = APIConnector(hub, self.transport, AccessTokenAuthorizer(access_token=os.environ["EVO_TOKEN"]))
        self.client = FileAPIClient(env, conn)

    async def upload(self, path, src, file_id=None):
        if file_id is None:
            ctx = await self.client.prepare_upload_by_path(path)
        else:
            ctx = await self.client.prepare_upload_by_id(file_id)
        await ctx.upload_from_path(src, self.transport)
        return ctx

    async def download(self, path, dst, version_id=None):
        if os.path.exists(dst):
            os.remove(dst)
        ctx = await self.client.prepare_download_by_path(path, version_id=version_id)
        await ctx.download_to_path(dst, self.transport)
        return ctx.metadata


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


async def suite(e, work):
    c = e.client
    health = await c.get_service_health()
    check(health is not None, "health")

    # Small, multi-block (the SDK puts 4 MiB blocks), empty, odd names.
    small, big = os.path.join(work, "small.bin"), os.path.join(work, "big.bin")
    want_small = write(small, os.urandom(1000))
    want_big = write(big, os.urandom(9 * 1024 * 1024 + 17))
    empty = os.path.join(work, "empty.bin")
    want_empty = write(empty, b"")
    await e.upload("sdk/small.bin", small)
    await e.upload("sdk/big.bin", big)
    await e.upload("sdk/empty.bin", empty)
    odd = "sdk/a&b=c+d e.txt"
    want_odd = write(os.path.join(work, "odd"), b"odd name\n")
    await e.upload(odd, os.path.join(work, "odd"))
    for path, want in [("sdk/small.bin", want_small), ("sdk/big.bin", want_big),
                       ("sdk/empty.bin", want_empty), (odd, want_odd)]:
        got = os.path.join(work, "got")
        md = await e.download(path, got)
        check(sha(got) == want, f"{path}: sha256 {sha(got)}, want {want}")
        # md.path is not checked: this SDK version builds it from the parent
        # folder's parent for a GET answer (its listing gets it right).
        check(md.name == path.rsplit("/", 1)[-1], f"{path}: metadata name {md.name}")

    # New versions by path and by id; versions listed; an old one fetched.
    meta1 = await c.get_file_by_path("sdk/small.bin")
    check(isinstance(meta1.version_id, str), f"version_id {meta1.version_id!r} is not a string")
    v2 = os.path.join(work, "v2")
    want_v2 = write(v2, b"second version\n")
    await e.upload("sdk/small.bin", v2)
    v3 = os.path.join(work, "v3")
    want_v3 = write(v3, os.urandom(5 * 1024 * 1024))
    up = await e.upload(None, v3, file_id=meta1.id)
    check(up.file_id == meta1.id, "upload by id: another file")
    got = os.path.join(work, "got")
    md = await e.download("sdk/small.bin", got)
    check(sha(got) == want_v3 and md.version_id == up.version_id, "latest version after upload by id")
    versions = await c.list_versions_by_path("sdk/small.bin")
    check(len(versions) == 3, f"{len(versions)} versions, want 3")
    by_id = await c.list_versions_by_id(meta1.id)
    check([v.version_id for v in by_id] == [v.version_id for v in versions], "versions by id and by path differ")
    check(meta1.version_id in [v.version_id for v in versions], "first version not listed")
    old = await c.get_file_by_id(meta1.id, version_id=meta1.version_id)
    check(old.version_id == meta1.version_id and old.size == 1000, f"old version {old}")
    await e.download("sdk/small.bin", got, version_id=meta1.version_id)
    check(sha(got) == want_small, "download of the first version")
    second = [v for v in versions if v.version_id not in (meta1.version_id, up.version_id)]
    check(len(second) == 1, "second version")
    await e.download("sdk/small.bin", got, version_id=second[0].version_id)
    check(sha(got) == want_v2, "download of the second version")

    # Listing: paging and the name filter.
    everything = await c.list_all_files(limit_per_request=2)
    paths = sorted(f.path.lstrip("/") for f in everything)
    for p in ["sdk/small.bin", "sdk/big.bin", "sdk/empty.bin", odd]:
        check(p in paths, f"{p} not listed in {paths}")
    page = await c.list_files(offset=0, limit=2)
    check(len(page) == 2 and page.total == len(everything), f"page of 2: {len(page)} of {page.total}")
    page2 = await c.list_files(offset=2, limit=2)
    check({f.id for f in page}.isdisjoint({f.id for f in page2}), "pages overlap")
    named = await c.list_files(name="big.bin")
    check([f.path.lstrip("/") for f in named.items()] == ["sdk/big.bin"], f"name filter: {named.items()}")

    # Delete, list deleted, restore.
    big_meta = await c.get_file_by_path("sdk/big.bin")
    await c.delete_file_by_path("sdk/big.bin")
    deleted = await c.list_all_files(deleted=True)
    check(big_meta.id in [f.id for f in deleted], "deleted file not listed as deleted")
    await c.delete_file_by_id(meta1.id)
    await c.restore_file_by_id(big_meta.id)
    await c.restore_file_by_id(meta1.id)
    md = await e.download("sdk/big.bin", got)
    check(sha(got) == want_big and md.id == big_meta.id, "restored file")
    live = await c.list_all_files()
    check(meta1.id in [f.id for f in live], "restored by id not listed")
    print("ok")


async def main(argv):
    e = Env()
    async with e.transport:
        if argv[1] == "suite":
            await suite(e, argv[2])
        elif argv[1] == "upload":
            await e.upload(argv[2], argv[3])
            print("ok")
        elif argv[1] == "download":
            await e.download(argv[2], argv[3])
            print(sha(argv[3]))
        else:
            raise SystemExit(f"unknown command {argv[1]}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv))
