"""Which copy of a shared library a bundle uses: the host's (bind-mounted) or the image's.

The rules of BundleGen's library matching: a library the platform's ``_libs.json`` does
not describe, or one the image lacks, comes from the host (mode ``image``: the image's
copy when it has one); otherwise mode ``host`` takes the host's, ``image`` the image's, and
``normal`` compares the ELF version definitions (``readelf -V``'s "Version definition
section" names): the host's copy when its set includes the image's, else the image's.
Taking the host's removes the image's copy (and what it links to inside the image) and
walks the library's ``deps``; libc's sub-libraries (libs whose version definitions are
all ``GLIBC_*``) follow libc.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from dsm_tr181.bundlegen import rootfs as root_files

_SHT_GNU_VERDEF = 0x6FFFFFFD
_LIBC_LIKE = (re.compile(r"^/(?:usr/)?lib/lib\S+\.so\.\d+$"), re.compile(r"^/(?:usr/)?lib/ld-linux\S*\.so\.\d+$"))


def version_definitions(data: bytes) -> list[str]:
    """The name of every version definition of an ELF file but the first (the file's own, which
    ``readelf -V`` prints at offset ``000000`` and BundleGen's parser skips); [] when none or not ELF."""
    if data[:4] != b"\x7fELF" or len(data) < 64:
        return []
    wide, endian = data[4] == 2, "<" if data[5] == 1 else ">"
    try:
        if wide:
            (shoff,) = struct.unpack_from(endian + "Q", data, 0x28)
            shentsize, shnum = struct.unpack_from(endian + "HH", data, 0x3A)
        else:
            (shoff,) = struct.unpack_from(endian + "I", data, 0x20)
            shentsize, shnum = struct.unpack_from(endian + "HH", data, 0x2E)
        sections = []
        for index in range(shnum):
            at = shoff + index * shentsize
            if wide:
                _, kind, _, _, offset, size, link = struct.unpack_from(endian + "IIQQQQI", data, at)
            else:
                _, kind, _, _, offset, size, link = struct.unpack_from(endian + "IIIIIII", data, at)
            sections.append((kind, offset, size, link))
        names: list[str] = []
        for kind, offset, _, link in sections:
            if kind != _SHT_GNU_VERDEF:
                continue
            strings = sections[link][1]
            entry = offset
            while True:
                _, _, _, count, _, aux, next_entry = struct.unpack_from(endian + "HHHHIII", data, entry)
                if count:
                    (name_at,) = struct.unpack_from(endian + "I", data, entry + aux)
                    end = data.index(b"\0", strings + name_at)
                    names.append(data[strings + name_at : end].decode(errors="replace"))
                if not next_entry:
                    break
                entry += next_entry
        return names[1:]
    except (struct.error, ValueError, IndexError):
        return []


class LibraryMatcher:
    def __init__(
        self,
        platform: dict[str, Any],
        rootfs: str,
        add_bind_mount: Callable[[str, str], None],
        mode: str,
        walk_dependencies: bool,
    ) -> None:
        self._rootfs = rootfs
        self._mount = add_bind_mount
        self._mode = mode
        self._handled: set[str] = set()
        libs = platform.get("libs") if walk_dependencies else None
        self._libs: dict[str, dict[str, Any]] = {lib["name"]: dict(lib) for lib in libs or []}
        self._find_sub_libraries()

    def mount(self, source: str, destination: str) -> None:
        """A library the template asks for (gfxLibs): always the host's."""
        self._take_host(source, destination, self._libs.get(source))

    def mount_or_use_image(self, source: str, destination: str) -> None:
        if destination in self._handled:
            return
        info = self._libs.get(source)
        in_image = root_files.exists(self._rootfs, destination)
        if info is None:
            if self._mode == "image" and in_image:
                self._take_image(destination, None)
            else:
                self._take_host(source, destination, None)
            return
        if self._mode == "normal" and info.get("parentlib"):
            self.mount_or_use_image(info["parentlib"], info["parentlib"])
            return
        if not in_image or self._mode == "host":
            self._take_host(source, destination, info)
        elif self._mode == "image":
            self._take_image(destination, info)
        elif not info["apiversions"]:
            self._take_host(source, destination, info)
        else:
            host = set(info["apiversions"])
            image = set(version_definitions(root_files.read_in_root(self._rootfs, destination) or b""))
            if host >= image:
                self._take_host(source, destination, info)
            else:
                self._take_image(destination, info)

    def _take_host(self, source: str, destination: str, info: dict[str, Any] | None) -> None:
        self._handled.add(destination)
        if root_files.exists(self._rootfs, destination):
            root_files.remove_library(self._rootfs, destination)
        self._mount(source, destination)
        for sub in (info or {}).get("sublibs", []):
            self._handled.add(sub)
            if root_files.exists(self._rootfs, sub):
                root_files.remove_library(self._rootfs, sub)
            self._mount(sub, sub)
        for needed in (info or {}).get("deps", []):
            self.mount_or_use_image(needed, needed)

    def _take_image(self, destination: str, info: dict[str, Any] | None) -> None:
        self._handled.add(destination)
        self._handled.update((info or {}).get("sublibs", []))

    def _find_sub_libraries(self) -> None:
        """libc: the lib with most GLIBC_* definitions and nothing else; others like it are its sub-libraries."""
        candidates = [
            lib for lib in self._libs.values()
            if any(p.match(lib["name"]) for p in _LIBC_LIKE) and lib["apiversions"]
            and all(v.startswith("GLIBC_") for v in lib["apiversions"])
        ]  # fmt: skip
        if not candidates:
            return
        libc = max(candidates, key=lambda lib: len(lib["apiversions"]))  # the first of the largest, as BundleGen
        libc["sublibs"] = [lib["name"] for lib in candidates if lib is not libc]
        for lib in candidates:
            if lib is not libc:
                lib["parentlib"] = libc["name"]
                lib["apiversions"] = []
