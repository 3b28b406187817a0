"""``shoal image``: the local image store on this host (an OCI image layout)."""

from __future__ import annotations

import argparse
from pathlib import Path

from shoal.cli.common import add_json
from shoal.cli.output import out, print_json, table
from shoal.errors import ShoalError

DEFAULT_IMAGE_DIR = Path("/var/lib/shoal/images")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("image", help="manage this host's local images")
    isub = p.add_subparsers(dest="verb", metavar="<verb>", parser_class=type(p))

    q = isub.add_parser("import-rootfs", help="import a root filesystem directory as an image")
    q.add_argument("rootfs", type=Path)
    q.add_argument("ref", metavar="NAME:TAG")
    q.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    q.set_defaults(func=cmd_import_rootfs)

    q = isub.add_parser("list", help="list local images")
    q.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    add_json(q)
    q.set_defaults(func=cmd_list)


def _store(path: Path):
    from shoal.agent.images import ImageStore  # the store is the agent's; only these commands need it

    return ImageStore(path)


def cmd_import_rootfs(args: argparse.Namespace) -> int:
    if not args.rootfs.is_dir():
        raise ShoalError(f"{args.rootfs}: not a directory")
    from shoal.agent.drivers.base import DriverError

    try:
        info = _store(args.image_dir).import_rootfs(args.rootfs, args.ref)
    except DriverError as e:
        raise ShoalError(str(e)) from None
    out.print(f"Imported {args.rootfs} as {args.ref} into {args.image_dir} ({info.digest})", markup=False)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    images = _store(args.image_dir).list()
    if args.json:
        print_json([{"ref": i.ref, "digest": i.digest, "size": i.size} for i in images])
        return 0
    if not images:
        out.print(f"No images in {args.image_dir}")
        return 0
    table(["Image", "Digest", "Size"], [(i.ref, i.digest[:19], f"{i.size / 1e6:.1f} MB") for i in images])
    return 0
