"""``dsm-bundle``: build DU archives offline (or on the device).

``dsm-bundle generate IMAGE --template DIR|TGZ --platform NAME -o OUT.tar.gz`` — an OCI image
made into a bundle for an RDK platform (see :mod:`~dsm_tr181.bundlegen.generate`).
``dsm-bundle key --template DIR|TGZ --platform NAME`` — the template's compatibility key.
``dsm-bundle compose a,b.shell,c --modules modules.json [--base IMAGE] -o OUT`` — modules laid
into a root filesystem (see :mod:`~dsm_tr181.bundlegen.compose`).
Errors print one line naming the problem and exit 1, leaving no output file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsm_tr181.bundlegen.compose import Request, compose
from dsm_tr181.bundlegen.errors import BundleError
from dsm_tr181.bundlegen.generate import Source, generate
from dsm_tr181.bundlegen.processor import LIB_MODES, RUNTIMES, Options
from dsm_tr181.bundlegen.template import load_template


def _template_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--template", type=Path, required=True, help="directory of templates, or a _dac_configs.tgz")
    parser.add_argument("--platform", required=True, help="platform name: {platform}.json and {platform}_libs.json")
    parser.add_argument("--api-version", required=True, help="first part of the compatibility key")
    parser.add_argument("--release-type", required=True, help="last part of the compatibility key")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsm-bundle", description="Build DU archives from OCI images.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    gen = verbs.add_parser("generate", help="an OCI image + a platform template → a DU archive")
    gen.add_argument("image", help="oci://host/repo:tag, an OCI image layout (dir or tar) or a docker save tar")
    _template_args(gen)
    gen.add_argument("-o", "--output", type=Path, required=True, help="the DU archive to write (.tar.gz)")
    gen.add_argument("--app-metadata", type=Path, help="appmetadata.json (default: the image's /appmetadata.json)")
    gen.add_argument("--runtime", choices=RUNTIMES, default="dobby", help="dobby: 1.0.2-dobby + rdkPlugins")
    gen.add_argument("--lib-matching", choices=LIB_MODES, default="normal")
    gen.add_argument("--no-dep-walking", action="store_true", help="ignore the _libs.json dependencies")
    gen.add_argument("--creds", default="", help="USER:PASSWORD for the registry")
    gen.add_argument("--ca-file", type=Path, help="PEM CA for an https registry")
    gen.add_argument("--plain-http", action="append", default=[], metavar="HOST:PORT", help="registry over http")
    key = verbs.add_parser("key", help="print the template's compatibility key")
    _template_args(key)
    comp = verbs.add_parser("compose", help="modules → a DU archive (or an OCI image layout)")
    comp.add_argument("modules", help="comma-separated module names; name.run chooses a run configuration")
    comp.add_argument("--modules-map", type=Path, required=True, help="modules.json naming the modules")
    comp.add_argument("--base", default="", help="image to lay the modules over (any image source)")
    comp.add_argument(
        "-o", "--output", type=Path, required=True, help="DU archive (.tar.gz) or, with --oci, a directory"
    )
    comp.add_argument("--oci", action="store_true", help="write an OCI image layout instead of a DU archive")
    comp.add_argument("--name", default="", help="DU name (default: the last module)")
    comp.add_argument("--version", default="")
    comp.add_argument("--define", action="append", default=[], metavar="VAR=VALUE", help="for ${VAR} in manifests")
    return parser


def _load_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: {exc}") from None
    if not isinstance(value, dict):
        raise BundleError(f"{path}: not a JSON object")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.verb == "compose":
            variables = dict(item.partition("=")[::2] for item in args.define)
            request = Request(args.modules.split(","), args.modules_map, args.output.absolute(), args.base, args.name,
                              args.version, variables, args.oci)  # fmt: skip
            print(compose(request))
            return 0
        template = load_template(args.template, args.platform)
        if args.verb == "key":
            print(template.compatibility_key(args.api_version, args.release_type))
            return 0
        username, _, password = args.creds.partition(":")
        out = generate(
            Source(args.image, username, password, args.ca_file, tuple(args.plain_http)),
            template,
            _load_json(args.app_metadata) if args.app_metadata else None,
            Options(args.runtime, args.lib_matching, not args.no_dep_walking),
            args.output.absolute(),
            api_version=args.api_version,
            release_type=args.release_type,
        )
    except BundleError as exc:
        print(f"dsm-bundle: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
