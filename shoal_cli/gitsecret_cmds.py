"""``shoal gitrepo secret``: credentials gitrepos fetch private repositories with.

A password or token is read from stdin, an SSH key from a file, so neither
shows in the shell history or in ``ps``; both are sent to the control plane
once and never printed back (``list`` shows names, kinds, users).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol import admin
from protocol.errors import ProtocolError
from protocol.gitrepos import GitCredentials, validate_secret_name
from shoal_cli import output
from shoal_cli.client import AdminClient
from shoal_cli.errors import UsageError

AddArgs = Callable[[argparse.ArgumentParser], None]


def add_parser(sub: Any, client: AddArgs, output_format: AddArgs) -> None:
    """``shoal gitrepo secret``, under the ``gitrepo`` sub-parsers ``sub``."""
    secret = sub.add_parser("secret", help="credentials gitrepos fetch with")
    secret_sub = secret.add_subparsers(dest="secret_command", metavar="ACTION", required=True)
    set_ = secret_sub.add_parser(
        "set",
        help="create or replace a git secret",
        description="Store credentials under NAME for `shoal gitrepo add --auth-secret NAME`. "
        "HTTPS: --username and the password or access token on stdin "
        "(`echo $TOKEN | shoal gitrepo secret set NAME --username git --password-stdin`). "
        "SSH: --ssh-key FILE, and --known-hosts FILE to pin the server's host key (without "
        "it the key seen first is remembered). Secrets are never printed back.",
    )
    set_.add_argument("name", metavar="NAME")
    kind = set_.add_mutually_exclusive_group(required=True)
    kind.add_argument(
        "--password-stdin", action="store_true", help="read the password or token from stdin"
    )
    kind.add_argument("--ssh-key", type=Path, metavar="FILE", help="SSH private key file")
    set_.add_argument("--username", metavar="USER", help="user name (HTTPS)")
    set_.add_argument("--known-hosts", type=Path, metavar="FILE", help="known_hosts file (SSH)")
    client(set_)
    set_.set_defaults(func=secret_set)

    listing = secret_sub.add_parser("list", help="git secrets: names, kinds, users, never secrets")
    output_format(listing)
    client(listing)
    listing.set_defaults(func=secret_list)

    delete = secret_sub.add_parser("delete", help="delete a git secret no gitrepo uses")
    delete.add_argument("name", metavar="NAME")
    client(delete)
    delete.set_defaults(func=secret_delete)


def _read_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from exc


def read_credentials(args: argparse.Namespace) -> GitCredentials:
    if args.ssh_key is not None:
        if args.username:
            raise UsageError("--username goes with --password-stdin, not --ssh-key")
        key = _read_file(args.ssh_key, "SSH key")
        hosts = _read_file(args.known_hosts, "known_hosts") if args.known_hosts else ""
        return GitCredentials(ssh_private_key=key, known_hosts=hosts)
    if not args.username:
        raise UsageError("--password-stdin needs --username (e.g. git, or oauth2 for GitLab)")
    if args.known_hosts:
        raise UsageError("--known-hosts goes with --ssh-key")
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("no password on stdin")
    return GitCredentials(username=args.username, password=password)


async def secret_set(args: argparse.Namespace) -> int:
    try:
        validate_secret_name(args.name)
    except ProtocolError as exc:
        raise UsageError(str(exc)) from exc
    credentials = read_credentials(args)
    async with AdminClient(args.server) as client:
        await client.admin(admin.GitSecretSet(name=args.name, credentials=credentials), admin.Ok)
    print(f"gitsecret/{args.name} configured ({credentials.kind})")
    return 0


async def secret_list(args: argparse.Namespace) -> int:
    async with AdminClient(args.server) as client:
        reply = await client.admin(admin.GitSecretList(), admin.GitSecretListReply)
    if args.output != "table":
        output.emit(
            [s.model_dump(mode="json", exclude={"KIND"}) for s in reply.secrets], args.output
        )
        return 0
    output.table(
        "Git secrets",
        ["NAME", "KIND", "USERNAME", "USED BY"],
        [[s.name, s.kind, s.username or "-", ", ".join(s.used_by) or "-"] for s in reply.secrets],
    )
    return 0


async def secret_delete(args: argparse.Namespace) -> int:
    async with AdminClient(args.server) as client:
        await client.admin(admin.GitSecretDelete(name=args.name), admin.Ok)
    print(f"gitsecret/{args.name} deleted")
    return 0
