"""Options several commands share."""

from __future__ import annotations

import argparse


def add_storage_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("object storage (credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
    g.add_argument("--endpoint-url", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL)")
    g.add_argument("--anon", action="store_true", help="anonymous access, for public buckets")


def storage_options_from(args: argparse.Namespace) -> dict | None:
    opts: dict = {}
    if getattr(args, "endpoint_url", None):
        opts["endpoint_url"] = args.endpoint_url
    if getattr(args, "anon", False):
        opts["anon"] = True
    return opts or None


def add_allow_untrained(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-untrained-positions", action="store_true",
                   help="go on when an input needs more positions than the checkpoint's pretraining windows held "
                   "(its config.json records them); default: off, such inputs are refused before any work")
