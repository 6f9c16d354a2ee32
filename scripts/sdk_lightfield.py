#!/usr/bin/env python3
"""Drives the official `lightfield` Python SDK (PyPI) against a sessionfs Lightfield emulator.

Usage: sdk_lightfield.py ENDPOINT API_KEY

Creates an upload session, PUTs the bytes to the presigned URL with exactly the returned
headers, completes it with the md5, retrieves and lists it, gets a download URL and downloads
(whole and a range), cancels a second session, and checks that the SDK raises its documented
error classes. Raw JSON bodies are checked too, since the SDK's models accept missing keys.
Exits non-zero with a message on the first mismatch.
"""

import hashlib
import sys

import httpx
import lightfield

FILE_KEYS = {"id", "status", "filename", "mimeType", "sizeBytes", "createdAt", "completedAt", "expiresAt"}


def check(condition, what):
    if not condition:
        raise SystemExit(f"sdk check failed: {what}")


def envelope(err):
    """The inner object of the `{"error": {...}}` envelope the SDK keeps in `err.body`."""
    check(isinstance(err.body, dict) and set(err.body) == {"error"}, f"error envelope {err.body}")
    return err.body["error"]


def main():
    endpoint, key = sys.argv[1], sys.argv[2]
    client = lightfield.Lightfield(api_key=key, base_url=endpoint, max_retries=0)
    data = b"hello from the official lightfield sdk\n" * 1000
    md5 = hashlib.md5(data).hexdigest()

    created = client.file.create(filename="sdk.txt", mime_type="text/plain", size_bytes=len(data))
    check(created.status == "PENDING", f"created status {created.status}")
    check(created.expires_at is not None and created.completed_at is None, "pending timestamps")
    put = httpx.put(created.upload_url, content=data, headers=created.upload_headers)
    check(put.status_code in (200, 201, 204), f"PUT answered {put.status_code}: {put.text}")

    completed = client.file.complete(created.id, md5=md5)
    check(completed.status == "COMPLETED", f"completed status {completed.status}")
    check(completed.completed_at is not None and completed.expires_at is None, "completed timestamps")

    raw = client.file.with_raw_response.retrieve(created.id).http_response.json()
    check(set(raw) == FILE_KEYS, f"retrieve keys {sorted(raw)}")
    check(raw["sizeBytes"] == len(data) and raw["filename"] == "sdk.txt", f"retrieve body {raw}")
    retrieved = client.file.retrieve(created.id)
    check(retrieved.id == created.id and retrieved.mime_type == "text/plain", "retrieve model")

    listing = client.file.list(limit=25)
    check(listing.object == "list" and listing.total_count == 1, f"list {listing}")
    check(listing.data[0].id == created.id, "list holds the file")
    check(client.file.list(offset=1).data == [], "offset past the end")

    url = client.file.url(created.id)
    check(url.expires_at, "url expiry")
    whole = httpx.get(url.url)
    check(whole.status_code == 200 and whole.content == data, f"download {whole.status_code}")
    part = httpx.get(url.url, headers={"Range": "bytes=6-9"})
    check(part.status_code == 206 and part.content == data[6:10], f"ranged download {part.status_code}")

    other = client.file.create(filename="other.bin", mime_type="application/octet-stream", size_bytes=3)
    cancelled = client.file.cancel(other.id)
    check(cancelled.status == "CANCELLED" and cancelled.expires_at is None, f"cancel {cancelled}")

    wrong = client.file.create(filename="wrong.txt", mime_type="text/plain", size_bytes=3)
    httpx.put(wrong.upload_url, content=b"abc", headers=wrong.upload_headers)
    try:
        client.file.complete(wrong.id, md5="0" * 32)
        raise SystemExit("sdk check failed: a wrong md5 was accepted")
    except lightfield.UnprocessableEntityError as err:
        check(envelope(err)["type"] == "unprocessable_content", f"md5 error body {err.body}")
    check(client.file.retrieve(wrong.id).status == "PENDING", "a wrong md5 leaves the file pending")

    try:
        client.file.retrieve("fil_missing")
        raise SystemExit("sdk check failed: an unknown id was found")
    except lightfield.NotFoundError as err:
        check(err.status_code == 404 and envelope(err)["type"] == "not_found", f"404 body {err.body}")
    try:
        client.file.complete(created.id)
        raise SystemExit("sdk check failed: a completed file completed again")
    except lightfield.ConflictError as err:
        check(envelope(err)["type"] == "conflict", f"409 body {err.body}")
    try:
        client.file.create(filename="x", mime_type="text/plain", size_bytes=0)
        raise SystemExit("sdk check failed: an empty file was accepted")
    except lightfield.BadRequestError as err:
        check(envelope(err)["code"] == "invalid_value" and envelope(err)["param"] == "sizeBytes", f"400 body {err.body}")
    try:
        lightfield.Lightfield(api_key="sk_lf_wrong", base_url=endpoint, max_retries=0).file.list()
        raise SystemExit("sdk check failed: a wrong key was accepted")
    except lightfield.AuthenticationError as err:
        check(envelope(err)["type"] == "unauthorized", f"401 body {err.body}")

    print("lightfield sdk: all checks passed")


if __name__ == "__main__":
    main()
