"""Upload a folder of images to s3://bucket/prefix/ (or a local landing directory), keeping class folders.

Every image under DIR (recursively; .jpg/.jpeg/.png; hidden and _-prefixed names and folders
are left out, as Spark leaves them out) lands at DEST/<its path under DIR>, so
"Apple Red 1/r_1_100.jpg" keeps its class folder. Re-running is cheap: a file whose copy at
DEST has the same size and content (sha256 kept in the object's metadata, or the MD5 ETag of
objects uploaded by other tools) is skipped. Local copies are written under a dot-prefixed
temporary name, then renamed, so a watching Spark stream never reads a half-written image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.console import emit_summary
from fruits.settings import Settings, default_of


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", type=Path, help="folder of class folders of images")
    parser.add_argument(
        "dest", metavar="DEST", help="s3://bucket/prefix/ (or s3a://), or a local directory / file:// URI"
    )
    parser.add_argument(
        "--endpoint-url",
        dest="s3_endpoint_url",
        help="S3-compatible endpoint (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, then AWS)",
    )
    parser.add_argument(
        "--region",
        dest="aws_region",
        help=f"AWS region (default: AWS_REGION, then {default_of(Settings, 'aws_region')})",
    )
    parser.add_argument("--workers", type=int, default=8, help="concurrent uploads (default: 8)")
    parser.add_argument("--dry-run", action="store_true", help="report what would be uploaded; write nothing")


def run(args: argparse.Namespace) -> int:
    from fruits.upload import upload_dir

    settings = Settings.load(s3_endpoint_url=args.s3_endpoint_url, aws_region=args.aws_region)
    report = upload_dir(
        args.dir,
        args.dest,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.aws_region,
        workers=args.workers,
        progress=not args.quiet,
        dry_run=args.dry_run,
    )
    emit_summary(report.summary(), args.json, report.human())
    return 1 if report.failed else 0
