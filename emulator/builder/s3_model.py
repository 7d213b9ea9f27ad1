"""``add-raw-model --model-s3-uri``: fetch a model archive from S3 with the caller's AWS credentials.

boto3 is not a dependency of the emulator: when it is installed and credentials are configured (the usual
chain: environment, ``~/.aws``, instance role), the object is downloaded; otherwise the command says so in
one sentence.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from emulator.errors import ProjectError

__all__ = ["fetch_s3_object", "split_s3_uri"]


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into bucket and key.

    Args:
        uri: the URI.

    Returns:
        ``(bucket, key)``.

    Raises:
        ProjectError: it is not an ``s3://bucket/key`` URI.
    """
    parts = urlsplit(uri)
    key = parts.path.lstrip("/")
    if parts.scheme != "s3" or not parts.netloc or not key or key.endswith("/"):
        raise ProjectError(f"--model-s3-uri {uri!r} is not s3://BUCKET/KEY of an object")
    return parts.netloc, key


def fetch_s3_object(uri: str, destination: Path) -> Path:
    """Download the S3 object ``uri`` to ``destination`` with the caller's AWS credentials.

    Args:
        uri: ``s3://bucket/key``.
        destination: the file to write.

    Returns:
        ``destination``.

    Raises:
        ProjectError: bad URI, boto3 missing, no credentials, or the download failed (one line saying which).
    """
    bucket, key = split_s3_uri(uri)
    try:
        import boto3  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise ProjectError(
            f"--model-s3-uri needs boto3 to fetch {uri} with your AWS credentials: install boto3 in this "
            "environment, or download the archive and give it with --model-local-path"
        ) from None
    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise ProjectError(
            f"no AWS credentials found to fetch {uri}: configure them (aws configure, AWS_PROFILE or the "
            "AWS_ACCESS_KEY_ID variables), or give the archive with --model-local-path"
        )
    try:
        session.client("s3").download_file(bucket, key, str(destination))
    except Exception as error:  # botocore has many error types; each becomes one line
        raise ProjectError(f"cannot fetch {uri}: {error}") from None
    return Path(destination)
