"""Build a sample OCI image without any container tool: an image layout on disk.

``python -m dsm_tools.sample_image OUT_DIR`` writes an OCI image layout (tag ``1.0``) of a
busybox image (from Debian's ``busybox-static``) that prints a greeting and waits; push it
with ``skopeo copy oci:OUT_DIR:1.0 docker://HOST/app:1.0``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsm_tools.sample_bundle import APPLETS, BUSYBOX
from dsm_tr181.bundlegen.ocilayout import Entry, Layout, file


def busybox_layer(busybox: Path = BUSYBOX) -> list[Entry]:
    """/bin/busybox with its applet links, /etc/passwd and /etc/group."""
    entries = [Entry(d, kind="dir", mode=0o755) for d in ("bin", "etc", "tmp", "proc", "dev", "sys")]
    entries.append(Entry("bin/busybox", busybox.read_bytes(), mode=0o755))
    entries += [Entry(f"bin/{applet}", kind="symlink", target="busybox") for applet in APPLETS]
    entries.append(file("etc/passwd", "root:x:0:0:root:/:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"))
    entries.append(file("etc/group", "root:x:0:\napp:x:1000:\nstaff:x:50:\n"))
    return entries


def greeter(layout: Layout, greeting: str = "hello from an image", tag: str = "1.0") -> dict[str, Any]:
    """A busybox image that prints ``greeting`` and waits for SIGTERM."""
    descriptor = layout.image(
        [busybox_layer()],
        {
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": [f"trap 'exit 0' TERM; echo {greeting}; sleep 3600 & wait"],
            "Env": ["PATH=/bin", "GREETING=" + greeting],
        },
        annotations={"org.opencontainers.image.title": "greeter", "org.opencontainers.image.version": tag},
    )
    layout.tag(descriptor, tag)
    return descriptor


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a busybox OCI image layout (tag 1.0).")
    parser.add_argument("out", type=Path, help="directory to write the image layout into")
    parser.add_argument("--greeting", default="hello from an image")
    args = parser.parse_args(argv)
    greeter(Layout(args.out), args.greeting)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
