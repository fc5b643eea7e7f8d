"""`jupyter hopx secrets set|list|rm|rotate-key`: the encrypted store behind `store:NAME` secrets.

A value is read from the terminal without echo, or from stdin when it is not a terminal; it is
never an argument, so it stays out of shell histories and `/proc/*/cmdline`.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from hopx_kernel.secret_store import KEY_ENV, SecretStore, SecretStoreError


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "secrets",
        help="manage the encrypted secret store (store:NAME secrets)",
        description="The store is AES-256-GCM sealed; its key is a file beside it (0600) or "
        f"base64 in {KEY_ENV}. `list` shows names, never values.",
    )
    parser.add_argument(
        "--store", type=Path, help="the store file (default: in the Jupyter data dir)"
    )
    parser.add_argument(
        "--key", type=Path, help="the key file (default: secrets.key beside the store)"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    set_parser = actions.add_parser(
        "set", help="store a secret: its value is read from the terminal (no echo) or stdin"
    )
    set_parser.add_argument("name", help="e.g. openai")
    actions.add_parser("list", help="the names of the stored secrets")
    rm_parser = actions.add_parser("rm", help="remove a secret")
    rm_parser.add_argument("name")
    actions.add_parser("rotate-key", help="seal every value with a new key")


def main(args: argparse.Namespace) -> int:
    store = SecretStore(args.store, args.key)
    try:
        if args.action == "set":
            store.set(args.name, _read_value(args.name))
            print(f"Stored {args.name} in {store.path}")
        elif args.action == "list":
            for name in store.names():
                print(name)
        elif args.action == "rm":
            if not store.remove(args.name):
                print(f"jupyter hopx secrets: no secret {args.name!r}", file=sys.stderr)
                return 1
            print(f"Removed {args.name}")
        else:
            count = store.rotate_key()
            print(f"Sealed {count} secrets with a new key in {store.key_path}")
    except SecretStoreError as e:
        print(f"jupyter hopx secrets: {e}", file=sys.stderr)
        return 2
    return 0


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"Value of {name}: ")
    # A value piped in (`vault kv get ... | jupyter hopx secrets set name`) ends in a newline
    # that is not part of it.
    return sys.stdin.read().removesuffix("\n")
