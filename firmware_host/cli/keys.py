"""`estim keys init|list|show`: the keys that sign treatment records.

A key is created once per clinic or device (`estim keys init`) and kept in the user's
config directory, readable by this user only. Every new record is signed with the
default key; `estim record verify` needs the key a record names. Keep a backup of the
key directory: a record whose key is lost can no longer be checked. The secret itself is
never printed.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import EXIT_OK, EXIT_REFUSED, Parser

EXAMPLES = """examples:
  estim keys init --label "Room 2, Northside clinic"
  estim keys init --new --label "Room 2 from 2026"     (older records keep verifying with the old key)
  estim keys list
  estim keys show k-3f9a0c1d2e4b5a60
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="estim keys", description="Create and list the keys that sign "
                                     "treatment records.", epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = sub.add_parser("init", help="create this computer's record key (once per clinic or device)")
    init.add_argument("--label", default="", help="who the key belongs to, e.g. the clinic and room")
    init.add_argument("--new", action="store_true",
                      help="create another key even if one exists, and sign new records with it")
    listing = sub.add_parser("list", help="list the keys on this computer (the default is marked *)")
    listing.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="show one key by id (never the secret)")
    show.add_argument("key_id", metavar="ID")
    show.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from safety.record_keys import RecordKeyError, create_key, default_key_id, key_dir, list_keys, load_key

    default = default_key_id()
    if args.action == "init":
        if default is not None and not args.new:
            print(f"a record key already exists: {default} (in {key_dir()}); new records are signed with it.\n"
                  "To start signing with a new key, run `estim keys init --new`.")
            return EXIT_OK
        key = create_key(args.label)
        print(f"created record key {key.key_id} in {key_dir()} (readable by you only); new records are "
              "signed with it.\nBack up that folder: records cannot be checked without their key.")
        return EXIT_OK
    if args.action == "list":
        keys = list_keys()
        if args.json:
            print(json.dumps([_plain(k, default) for k in keys], indent=2))
        elif not keys:
            print(f"no record keys in {key_dir()}; `estim keys init` creates one")
        for k in [] if args.json else keys:
            print(f"{'*' if k.key_id == default else ' '} {k.key_id}  {k.created}  {k.label}")
        return EXIT_OK
    try:
        key = load_key(args.key_id)
    except RecordKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    info = _plain(key, default)
    print(json.dumps(info, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in info.items()))
    return EXIT_OK


def _plain(key, default: str | None) -> dict[str, object]:  # noqa: ANN001 - safety.RecordKey
    from safety.record_keys import ALGORITHM, key_dir

    return {"id": key.key_id, "label": key.label, "created": key.created, "algorithm": ALGORITHM,
            "default": key.key_id == default, "file": str(key_dir() / f"{key.key_id}.json")}
