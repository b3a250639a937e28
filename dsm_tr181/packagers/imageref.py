"""Image references (``oci://host[:port]/repo[:tag][@sha256:hex]``) and the device's platform.

A reference names a registry host, a repository and either a tag (default
``latest``) or a manifest digest (then the tag, if also given, is informative only).
The platform is what a multi-arch index is resolved to: ``os/architecture[/variant]``
as OCI spells them (``linux/arm/v7``, ``linux/arm64``); by default the machine's own.
"""

from __future__ import annotations

import platform as host_platform
import re
from dataclasses import dataclass

from dsm_tr181.errors import Fault, FaultCode

SCHEME = "oci://"
_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# uname -m → (OCI architecture, variant)
_MACHINES = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i686": ("386", ""),
    "i386": ("386", ""),
    "riscv64": ("riscv64", ""),
}


@dataclass(frozen=True)
class ImageRef:
    host: str  # host[:port]
    repository: str
    tag: str
    digest: str  # "sha256:<hex>" or ""

    @property
    def reference(self) -> str:
        """What the manifests endpoint is asked for."""
        return self.digest or self.tag

    def __str__(self) -> str:
        return f"{SCHEME}{self.host}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.tag}")


def is_image_ref(url: str) -> bool:
    return url.lower().startswith(SCHEME)


def parse_ref(url: str) -> ImageRef:
    """Parse an ``oci://`` reference; INVALID_ARGUMENTS naming what is wrong."""
    if not is_image_ref(url):
        raise Fault(FaultCode.UNSUPPORTED_PROTOCOL, f"{url[:200]!r} is not an oci:// image reference")
    rest = url[len(SCHEME) :]
    host, sep, name = rest.partition("/")
    if "@" in host and "@" not in name:
        raise Fault(
            FaultCode.INVALID_ARGUMENTS, "the image reference must not carry credentials; use Username and Password"
        )
    if not sep or not _HOST.fullmatch(host):
        raise Fault(FaultCode.INVALID_ARGUMENTS, f"{url[:200]!r}: expected oci://host[:port]/repository[:tag]")
    name, _, digest = name.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise Fault(FaultCode.INVALID_ARGUMENTS, f"{url[:200]!r}: the digest must be sha256:<64 lowercase hex digits>")
    repository, tag = name, ""
    last = name.rpartition("/")[2]
    if ":" in last:
        repository, _, tag = name.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise Fault(FaultCode.INVALID_ARGUMENTS, f"{url[:200]!r}: malformed tag {tag!r}")
    if not _REPOSITORY.fullmatch(repository):
        raise Fault(FaultCode.INVALID_ARGUMENTS, f"{url[:200]!r}: malformed repository name {repository!r}")
    return ImageRef(host, repository, tag or ("" if digest else "latest"), digest)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise ValueError(f"platform {text!r} is not os/architecture[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def host(cls) -> Platform:
        machine = host_platform.machine()
        architecture, variant = _MACHINES.get(machine, (machine, ""))
        return cls("linux", architecture, variant)

    def score(self, entry: Platform) -> int:
        """How well an index entry fits this device: 0 not at all, 2 exactly, 1 without a variant."""
        if (entry.os, entry.architecture) != (self.os, self.architecture):
            return 0
        if entry.variant == self.variant:
            return 2
        return 1 if not entry.variant else 0
