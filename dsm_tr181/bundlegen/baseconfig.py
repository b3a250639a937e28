"""The config.json BundleGen starts from: what ``umoci unpack --rootless`` makes of an image config.

BundleGen lets umoci (0.4.x, as Debian ships it) unpack the image and edits the config it
writes; generating the same starting point here (no umoci on the device) keeps the result
field for field equal (``tests/unit/test_bundlegen.py`` compares it with the real umoci).
In short: umoci's defaults (terminal, the three default capabilities in all five sets,
NOFILE 1024, hostname ``umoci-default``, /proc /dev /dev/pts /dev/shm /dev/mqueue), the
image's Entrypoint+Cmd, Env (over ``PATH``/``TERM=xterm``, ``HOME`` from /etc/passwd),
WorkingDir, User (names from the image's /etc/passwd and /etc/group, read without
following symlinks), Volumes as tmpfs (sorted: umoci lists them in Go's random map
order), Labels and the image's os/architecture/author/
created/exposedPorts/stopSignal as annotations; then the rootless changes: a user
namespace mapping the running user to root, no network namespace, /sys and
/etc/resolv.conf bound from the host.
"""

from __future__ import annotations

import os
from typing import Any

from dsm_tr181.bundlegen.errors import BundleError
from dsm_tr181.packagers.imageconfig import IMAGE, _account_file

_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
_CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def umoci_config(image: dict[str, Any], rootfs: str, label: str) -> dict[str, Any]:
    config = image.get("config") or {}
    args = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
    if not args:
        raise BundleError(f"{label}: the image has neither Entrypoint nor Cmd")
    uid, gid, home = _user(str(config.get("User") or ""), rootfs, label)
    env = _environment([_PATH, "TERM=xterm"], list(config.get("Env") or []))
    if not any(item.startswith("HOME=") for item in env):
        env.append(f"HOME={home}")
    user: dict[str, Any] = {"uid": uid, "gid": gid}
    mounts = _default_mounts() + [
        {
            "destination": path,
            "type": "tmpfs",
            "source": "none",
            "options": ["rw", "nosuid", "nodev", "noexec", "relatime"],
        }
        for path in sorted(config.get("Volumes") or {})
    ]
    mounts += [
        {
            "destination": "/sys",
            "type": "bind",
            "source": "/sys",
            "options": ["rbind", "nosuid", "noexec", "nodev", "ro"],
        },
        {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["rbind", "ro"]},
    ]
    return {
        "ociVersion": "1.0.0",
        "process": {
            "terminal": True,
            "user": user,
            "args": args,
            "env": env,
            "cwd": str(config.get("WorkingDir") or "/"),
            "capabilities": {key: list(_CAPS) for key in _CAP_SETS},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs"},
        "hostname": "umoci-default",
        "mounts": mounts,
        "annotations": _annotations(image, config),
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": os.geteuid(), "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": os.getegid(), "size": 1}],
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "user")],
            "maskedPaths": [
                "/proc/kcore", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }  # fmt: skip


def _default_mounts() -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    ]  # fmt: skip


def _environment(base: list[str], image: list[str]) -> list[str]:
    """The image's variables over the defaults: same name replaced in place, others appended."""
    env = list(base)
    for item in image:
        name = item.partition("=")[0]
        for index, existing in enumerate(env):
            if existing.partition("=")[0] == name:
                env[index] = item
                break
        else:
            env.append(item)
    return env


def _annotations(image: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    out = {
        IMAGE + "architecture": str(image.get("architecture", "")),
        IMAGE + "author": str(image.get("author", "")),
        IMAGE + "created": str(image.get("created") or _GO_ZERO_TIME),
        IMAGE + "os": str(image.get("os", "")),
    }
    out[IMAGE + "exposedPorts"] = ",".join(sorted(config.get("ExposedPorts") or {}))  # "" when none, as umoci
    out[IMAGE + "stopSignal"] = str(config.get("StopSignal") or "")
    out.update({str(k): str(v) for k, v in (config.get("Labels") or {}).items()})
    return out


def _user(spec: str, rootfs: str, label: str) -> tuple[int, int, str]:
    """uid, gid and home, as umoci works them out (no supplementary groups in rootless mode)."""
    user, _, group = spec.partition(":")
    passwd = _account_file(rootfs, "passwd", label)
    entry = next((row for row in passwd if row[0] == user or (user.isdigit() and row[2] == user)), None)
    if user and not user.isdigit() and entry is None:
        raise BundleError(f"{label}: the image's user {user!r} is not in its /etc/passwd")
    if entry is None and not user:
        entry = next((row for row in passwd if row[2] == "0"), None)
    uid = int(user) if user.isdigit() else int(entry[2]) if entry else 0
    gid = int(entry[3]) if entry else 0
    home = entry[5] if entry and len(entry) > 5 and entry[5] else "/"
    groups = _account_file(rootfs, "group", label)
    if group:
        found = group if group.isdigit() else next((row[2] for row in groups if row[0] == group), None)
        if found is None:
            raise BundleError(f"{label}: the image's group {group!r} is not in its /etc/group")
        gid = int(found)
    return uid, gid, home
