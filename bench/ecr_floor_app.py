"""The stack floor for bench/ecr.py: the least a signed, durable ECR call costs on Moorage's HTTP
stack (granian ASGI, uvloop, one worker), with no registry behind it.

Every call is a `POST /` whose SigV4 signature is checked with Moorage's own verifier (the one
key of the bench) and whose JSON body is decoded; then, by X-Amz-Target:

    CreateRepository      one INSERT, committed (WAL, synchronous=FULL: one fsync)
    PutImage              one INSERT of the manifest and its tag, committed the same way
    DescribeRepositories  one SELECT by name (or none: the bench's readiness check)
    BatchGetImage         one SELECT by tag
    anything else         HTTP 400 UnknownOperationException (the bench's layer uploads, as
                          moto answers them with an error)

The answer is compact JSON (orjson, as Moorage's). SQLite runs on one connection in the event
loop's thread, as Moorage's writes do. Nothing else: no validation beyond what the statements
need, no authorization, no events, no repository or image model. Its CPU per call is what any
app on this stack pays at least for the same durable effect; Moorage's column beside it shows
what the registry adds. Data goes under $MOORAGE_BENCH_FLOOR_DIR.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson

from moorage import sigv4

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ROOT = os.environ.get("MOORAGE_BENCH_FLOOR_DIR", "/tmp/moorage-bench-ecr-floor")
_SECRET = os.environ["MOORAGE_ROOT_SECRET_ACCESS_KEY"]
_ACCOUNT = "000000000000"
_PREFIX = "AmazonEC2ContainerRegistry_V20150921."

os.makedirs(_ROOT, exist_ok=True)
_db = sqlite3.connect(os.path.join(_ROOT, "floor.db"), isolation_level=None, check_same_thread=False)
_db.execute("PRAGMA journal_mode=WAL")
_db.execute("PRAGMA synchronous=FULL")
_db.execute("CREATE TABLE IF NOT EXISTS repos (name TEXT PRIMARY KEY, created REAL NOT NULL)")
_db.execute(
    "CREATE TABLE IF NOT EXISTS images (repo TEXT NOT NULL, tag TEXT NOT NULL, digest TEXT NOT NULL,"
    " manifest BLOB NOT NULL, pushed REAL NOT NULL, PRIMARY KEY (repo, tag))"
)


def _write(statement: str, values: tuple[Any, ...]) -> None:
    _db.execute("BEGIN IMMEDIATE")
    try:
        _db.execute(statement, values)
    except BaseException:
        _db.execute("ROLLBACK")
        raise
    _db.execute("COMMIT")


def _repository(name: str, created: float) -> dict[str, Any]:
    return {
        "repositoryArn": f"arn:aws:ecr:us-east-1:{_ACCOUNT}:repository/{name}",
        "registryId": _ACCOUNT,
        "repositoryName": name,
        "repositoryUri": f"{_ACCOUNT}.dkr.ecr.us-east-1.localhost/{name}",
        "createdAt": created,
        "imageTagMutability": "MUTABLE",
    }


def _call(operation: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if operation == "CreateRepository":
        created = round(time.time(), 3)
        _write("INSERT INTO repos VALUES (?, ?)", (params["repositoryName"], created))
        return 200, {"repository": _repository(params["repositoryName"], created)}
    if operation == "PutImage":
        manifest = params["imageManifest"].encode()
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        repo, tag = params["repositoryName"], params["imageTag"]
        _write("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?)", (repo, tag, digest, manifest, time.time()))
        image_id = {"imageDigest": digest, "imageTag": tag}
        return 200, {"image": {"registryId": _ACCOUNT, "repositoryName": repo, "imageId": image_id}}
    if operation == "DescribeRepositories":
        names = params.get("repositoryNames") or []
        query = "SELECT created FROM repos WHERE name = ?"
        found = [_repository(n, created) for n in names for (created,) in _db.execute(query, (n,))]
        return 200, {"repositories": found}
    if operation == "BatchGetImage":
        repo, images = params["repositoryName"], []
        for image_id in params["imageIds"]:
            for digest, manifest in _db.execute(
                "SELECT digest, manifest FROM images WHERE repo = ? AND tag = ?", (repo, image_id["imageTag"])
            ):
                images.append(
                    {
                        "registryId": _ACCOUNT,
                        "repositoryName": repo,
                        "imageId": {"imageDigest": digest, "imageTag": image_id["imageTag"]},
                        "imageManifest": manifest.decode(),
                    }
                )
        return 200, {"images": images, "failures": []}
    return 400, {"__type": "UnknownOperationException", "message": f"not in the floor: {operation}"}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = b"".join(chunks)
    headers: dict[str, list[str]] = {}
    for key, value in scope["headers"]:
        headers.setdefault(key.decode("latin-1"), []).append(value.decode("latin-1"))
    try:
        parsed = sigv4.parse_request_auth("POST", headers, scope["query_string"])
        sigv4.verify(
            parsed,
            secret_access_key=_SECRET,
            method=scope["method"],
            path=scope["raw_path"],
            query_string=scope["query_string"],
            headers=headers,
            payload_sha256_hex=hashlib.sha256(body).hexdigest(),
            now=datetime.now(UTC),
        )
        target = (headers.get("x-amz-target") or [""])[-1]
        status, answer = _call(target.removeprefix(_PREFIX), json.loads(body or b"{}"))
    except sigv4.SigV4Error as exc:
        status, answer = 403, {"__type": exc.code, "message": exc.message}
    except (sqlite3.IntegrityError, KeyError, ValueError) as exc:
        status, answer = 400, {"__type": "InvalidParameterException", "message": str(exc)}
    payload = orjson.dumps(answer)
    response_headers = [
        (b"content-type", b"application/x-amz-json-1.1"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": payload})
