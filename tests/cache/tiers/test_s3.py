"""Behaviour specific to the S3 tier, against moto's S3 server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from tests.cache.tiers.test_contract import make_entry
from tests.servers import MotoS3Server
from voicecache.cache.tiers import Entry
from voicecache.cache.tiers.s3 import S3Tier

pytestmark = pytest.mark.s3

NOW = 1_700_000_000.0
ID = "ab" * 32 + ".flac"


@pytest.fixture
async def tier(s3_server: MotoS3Server, s3_bucket: str) -> AsyncIterator[S3Tier]:
    made = S3Tier(
        s3_bucket,
        prefix="cold/",
        endpoint_url=s3_server.endpoint_url,
        region=s3_server.region,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        clock=lambda: NOW,
    )
    yield made
    await made.aclose()


async def test_object_name_and_ascii_metadata_with_cjk_text(
    tier: S3Tier, s3_server: MotoS3Server, s3_bucket: str
) -> None:
    entry = make_entry("ab" * 32, b"audio", expires_at=NOW + 60)
    entry = Entry(entry.data, replace(entry.meta, text="欢迎来到直播间" * 300, tags=("直播", "x")))
    await tier.set(ID, entry)
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=f"cold/ab/{ID}")
    metadata = head["Metadata"]
    assert metadata["vc-key"] == "ab" * 32 and metadata["vc-format"] == "flac"
    assert float(metadata["vc-stale-until"]) == NOW + 70
    assert metadata["vc-tags"] == "%E7%9B%B4%E6%92%AD,x"
    assert all(value.isascii() for value in metadata.values())
    got = await tier.get(ID)
    assert got is not None and got.meta.text == entry.meta.text  # full header from the body
    assert [meta.text for _, meta in [item async for item in tier.scan()]] == [entry.meta.text]


async def test_expiry_is_checked_on_read(
    tier: S3Tier, s3_server: MotoS3Server, s3_bucket: str
) -> None:
    await tier.set(ID, make_entry("ab" * 32, b"audio", expires_at=NOW + 60))  # stale at +70
    tier.clock = lambda: NOW + 71
    assert await tier.get(ID) is None
    listed = s3_server.client().list_objects_v2(Bucket=s3_bucket)
    assert listed.get("KeyCount", 0) == 0  # deleted on the way


async def test_missing_bucket_is_a_readable_storage_error(s3_server: MotoS3Server) -> None:
    from voicecache.errors import StorageError

    tier = S3Tier(
        "no-such-bucket",
        endpoint_url=s3_server.endpoint_url,
        region=s3_server.region,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
    )
    try:
        with pytest.raises(StorageError, match="no-such-bucket"):
            await tier.check()
    finally:
        await tier.aclose()
