"""A real S3-compatible server (moto's server mode) on 127.0.0.1 for the object-store tests.

The server is started once per test session and stopped at its end; each test gets its own key
prefix. The endpoint and credentials are passed the way users pass them, through the standard
AWS environment variables, which pyarrow (and every Ray worker started after them) reads.
"""

import logging
import os
import socket
import uuid
from dataclasses import dataclass

import pytest

ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")


@dataclass
class S3Server:
    endpoint: str
    bucket: str

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` (temporary objects included, if any)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def uploads(self, prefix: str = "") -> list[str]:
        """Keys of multipart uploads started and never completed or aborted."""
        r = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return [u["Key"] for u in r.get("Uploads", [])]

    def prefix(self) -> str:
        return f"t-{uuid.uuid4().hex[:10]}"

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    pytest.importorskip("moto", reason="moto[server] (dev extra) is needed for the S3 tests")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="testing",
                      AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1",
                      AWS_EC2_METADATA_DISABLED="true")
    s3 = S3Server(f"http://127.0.0.1:{port}", "hqseg-test")
    s3.client().create_bucket(Bucket=s3.bucket)
    try:
        yield s3
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
