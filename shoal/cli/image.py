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

    q = isub.add_parser("import", help="import an oci-archive or a `docker save` tarball")
    q.add_argument("file", type=Path)
    q.add_argument("--tag", metavar="NAME:TAG", help="name the image (for archives that do not name it)")
    q.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    q.set_defaults(func=cmd_import)

    q = isub.add_parser("import-rootfs", help="import a root filesystem directory as an image")
    q.add_argument("rootfs", type=Path)
    q.add_argument("ref", metavar="NAME:TAG")
    q.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    q.set_defaults(func=cmd_import_rootfs)

    q = isub.add_parser("pull", help="pull an image from a registry (HOST[:PORT]/NAME:TAG)")
    q.add_argument("ref", metavar="IMAGE")
    q.add_argument("--insecure-registry", action="append", default=[], metavar="HOST:PORT",
                   help="reach this registry over plain http (loopback registries always are)")
    q.add_argument("--registry-auth", type=Path, metavar="FILE", help="credentials: a Docker config.json")
    q.add_argument("--default-registry", default="docker.io", help="registry for names without one")
    q.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    q.set_defaults(func=cmd_pull)

    q = isub.add_parser("list", help="list local images")
    q.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    add_json(q)
    q.set_defaults(func=cmd_list)

    q = isub.add_parser("rm", help="untag a local image (its blobs go at the agent's next garbage collection)")
    q.add_argument("ref", metavar="IMAGE")
    q.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    q.set_defaults(func=cmd_rm)


def _store(path: Path):
    from shoal.agent.imagestore import ImageStore  # the store is the agent's; only these commands need it

    return ImageStore(path)


def _driver_error():
    from shoal.agent.drivers.base import DriverError

    return DriverError


def cmd_import(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise ShoalError(f"{args.file}: no such file")
    from shoal.agent.imageimport import import_archive

    try:
        infos = import_archive(_store(args.image_dir), args.file, tag=args.tag)
    except _driver_error() as e:
        raise ShoalError(str(e)) from None
    for info in infos:
        out.print(f"Imported {info.ref} ({info.digest}) from {args.file} into {args.image_dir}", markup=False)
    return 0


def cmd_import_rootfs(args: argparse.Namespace) -> int:
    if not args.rootfs.is_dir():
        raise ShoalError(f"{args.rootfs}: not a directory")
    from shoal.agent.imageimport import import_rootfs

    try:
        info = import_rootfs(_store(args.image_dir), args.rootfs, args.ref)
    except _driver_error() as e:
        raise ShoalError(str(e)) from None
    out.print(f"Imported {args.rootfs} as {args.ref} into {args.image_dir} ({info.digest})", markup=False)
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from shoal.agent.imagepull import pull_image
    from shoal.agent.registry_client import RegistryClient, RegistryConfig, load_auth_file

    try:
        cfg = RegistryConfig(insecure=frozenset(args.insecure_registry), default_registry=args.default_registry,
                             auths=load_auth_file(args.registry_auth) if args.registry_auth else {})
        info = pull_image(RegistryClient(cfg), _store(args.image_dir), args.ref)
    except _driver_error() as e:
        raise ShoalError(str(e)) from None
    out.print(f"Pulled {info.ref} ({info.digest}, {info.size / 1e6:.1f} MB) into {args.image_dir}", markup=False)
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


def cmd_rm(args: argparse.Namespace) -> int:
    if not _store(args.image_dir).remove(args.ref):
        raise ShoalError(f"image {args.ref} not found in {args.image_dir}")
    out.print(f"Untagged {args.ref}", markup=False)
    return 0
