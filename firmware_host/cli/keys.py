"""`estim keys init|list|show|export|import`: the keys that sign treatment records.

A key pair is created once per treatment room or device (`estim keys init`) and kept in the
user's config directory, readable by this user only. Every new record is signed with the
default key's private half; verifying needs only the public half, so the clinic publishes
its public keys (`estim keys export`) and another room or an auditor trusts them with
`estim keys import` and verifies there, without being able to sign. `--new` rotates: older
keys are kept, so older records keep verifying. The private key is never printed or exported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import EXIT_OK, EXIT_REFUSED, Parser

EXAMPLES = """examples:
  estim keys init --label "Room 2, Northside clinic"
  estim keys init --new --label "Room 2 from 2026"     (older records keep verifying with the old key)
  estim keys list
  estim keys show k-3f9a0c1d2e4b5a60
  estim keys export --out clinic-public-keys.json     (every public key: for other rooms and auditors)
  estim keys import clinic-public-keys.json           (on the auditor's computer)
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
    show = sub.add_parser("show", help="show one key by id (never the private key)")
    show.add_argument("key_id", metavar="ID")
    show.add_argument("--json", action="store_true")
    export = sub.add_parser("export", help="write the public keys (all, or those named) for verifying elsewhere")
    export.add_argument("key_ids", metavar="ID", nargs="*")
    export.add_argument("--out", type=Path, metavar="JSON", help="the file (default: print them)")
    imported = sub.add_parser("import", help="trust public keys another computer exported, to verify its records")
    imported.add_argument("file", type=Path, metavar="JSON")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from safety.record_keys import (RecordKeyError, create_key, default_key_id, import_public, key_dir, list_keys,
                                    load_key)

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
            print(f"{'*' if k.key_id == default else ' '} {k.key_id}  {k.created}  {k.label}"
                  + ("" if k.can_sign else "  (public key: verifies only)"))
        return EXIT_OK
    if args.action == "export":
        try:
            keys = [load_key(k) for k in args.key_ids] if args.key_ids else list_keys()
        except RecordKeyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        body = json.dumps({"public_keys": [k.public_document() for k in keys]}, indent=2) + "\n"
        if args.out is None:
            print(body, end="")
            return EXIT_OK
        try:
            args.out.write_text(body)
        except OSError as exc:
            print(f"error: cannot write {args.out} ({exc.strerror or exc})", file=sys.stderr)
            return EXIT_REFUSED
        print(f"{len(keys)} public key(s) written to {args.out}: give it to the rooms and auditors that verify "
              "this computer's records (it cannot sign anything)")
        return EXIT_OK
    if args.action == "import":
        try:
            docs = json.loads(args.file.read_text()).get("public_keys")
            if not isinstance(docs, list):
                raise ValueError
            keys = [import_public(doc) for doc in docs]
        except OSError as exc:
            print(f"error: cannot read {args.file} ({exc.strerror or exc})", file=sys.stderr)
            return EXIT_REFUSED
        except (ValueError, AttributeError, RecordKeyError) as exc:
            print(f"error: {args.file} is not a public key file written by `estim keys export`"
                  + (f" ({exc})" if isinstance(exc, RecordKeyError) else ""), file=sys.stderr)
            return EXIT_REFUSED
        for key in keys:
            print(f"trusted {key.key_id} ({key.label or 'no label'}): records it signed can be verified here")
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
    from safety.record_keys import ALGORITHM, PUBLIC_SUFFIX, key_dir

    return {"id": key.key_id, "label": key.label, "created": key.created, "algorithm": ALGORITHM,
            "public": key.public.hex(), "signs_here": key.can_sign, "default": key.key_id == default,
            "file": str(key_dir() / f"{key.key_id}{'.json' if key.can_sign else PUBLIC_SUFFIX}")}
