"""The bundle's config.json, made from an OCI image config as the image-spec's conversion rules say.

A plain OCI runtime-spec 1.0.2 config, unprivileged and minimal: ``runc spec``'s
defaults (namespaces, the three default capabilities, masked and read-only /proc
paths, /proc /dev /dev/pts /dev/shm /dev/mqueue /sys) plus a tmpfs on /tmp and one
per image ``Volumes`` entry (no host path is ever mounted); the root read-only (its
files are hard links shared with other DUs, see
:mod:`~dsm_tr181.packagers.layerstore`). Confinement beyond that (resources,
devices, seccomp, policy) is the runtime side's business.

- ``Entrypoint`` + ``Cmd`` → ``process.args`` (neither: CORRUPT_DATA); ``Env`` → ``process.env``
  (PATH defaulted); ``WorkingDir`` → ``cwd``; ``User`` (``uid``, ``name``, ``uid:gid``,
  ``name:group``) → ``process.user``, names looked up in the image's /etc/passwd and
  /etc/group without following symlinks.
- ``Labels`` → annotations; ``ExposedPorts`` → ``org.opencontainers.image.exposedPorts``
  (comma-separated); ``StopSignal`` → ``org.opencontainers.image.stopSignal``;
  ``os``/``architecture``/``author``/``created`` → their ``org.opencontainers.image.*``
  annotations; then the manifest's own annotations, which win.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from dsm_tr181.errors import Fault, FaultCode

IMAGE = "org.opencontainers.image."
_DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CAPABILITIES = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
_MAX_ACCOUNT_FILE = 1 << 20


def runtime_config(
    image: dict[str, Any], manifest_annotations: dict[str, str], rootfs: str, label: str
) -> dict[str, Any]:
    config = image.get("config") or {}
    if not isinstance(config, dict):
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: the image config's config is not an object")
    args = _strings(config.get("Entrypoint"), "Entrypoint", label) + _strings(config.get("Cmd"), "Cmd", label)
    if not args:
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: the image has neither Entrypoint nor Cmd: nothing to run")
    env = _strings(config.get("Env"), "Env", label)
    if not any(item.startswith("PATH=") for item in env):
        env.insert(0, _DEFAULT_PATH)
    uid, gid = _user(str(config.get("User") or ""), rootfs, label)
    volumes = config.get("Volumes") or {}
    mounts = _default_mounts() + [
        {"destination": path, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
        for path in sorted(volumes)
        if isinstance(path, str) and path.startswith("/") and path not in ("/tmp", "/proc", "/sys", "/dev")
    ]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid},
            "args": args,
            "env": env,
            "cwd": str(config.get("WorkingDir") or "/"),
            "capabilities": {key: list(_CAPABILITIES) for key in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "dsm",
        "mounts": mounts,
        "annotations": _annotations(image, config, manifest_annotations),
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }  # fmt: skip


def _default_mounts() -> list[dict[str, Any]]:
    nosuid = ["nosuid", "noexec", "nodev"]
    pts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": pts},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": [*nosuid, "mode=1777"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": list(nosuid)},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*nosuid, "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
    ]  # fmt: skip


def _strings(value: Any, what: str, label: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: the image config's {what} must be a list of strings")
    return list(value)


def _annotations(image: dict[str, Any], config: dict[str, Any], manifest: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    labels = config.get("Labels") or {}
    if isinstance(labels, dict):
        out.update({str(k): v for k, v in labels.items() if isinstance(v, str)})
    ports = config.get("ExposedPorts") or {}
    if isinstance(ports, dict) and ports:
        out[IMAGE + "exposedPorts"] = ",".join(sorted(str(port) for port in ports))
    if isinstance(config.get("StopSignal"), str) and config["StopSignal"]:
        out[IMAGE + "stopSignal"] = config["StopSignal"]
    for key in ("os", "architecture", "author", "created"):
        if isinstance(image.get(key), str) and image[key]:
            out[IMAGE + key] = image[key]
    out.update(manifest)
    return out


def _user(spec: str, rootfs: str, label: str) -> tuple[int, int]:
    """The numeric uid and gid of an image ``User`` (root when unset)."""
    if not spec:
        return 0, 0
    user, _, group = spec.partition(":")
    passwd = None if user.isdigit() and (group.isdigit() or not group) else _account_file(rootfs, "passwd", label)
    if user.isdigit():
        uid = int(user)
        gid = next((int(f[3]) for f in passwd or [] if f[2] == user), 0)
    else:
        found = next((f for f in passwd or [] if f[0] == user), None)
        if found is None:
            raise Fault(FaultCode.CORRUPT_DATA, f"{label}: the image's user {user!r} is not in its /etc/passwd")
        uid, gid = int(found[2]), int(found[3])
    if group.isdigit():
        gid = int(group)
    elif group:
        groups = _account_file(rootfs, "group", label)
        found = next((f for f in groups if f[0] == group), None)
        if found is None:
            raise Fault(FaultCode.CORRUPT_DATA, f"{label}: the image's group {group!r} is not in its /etc/group")
        gid = int(found[2])
    return uid, gid


def _account_file(rootfs: str, name: str, label: str) -> list[list[str]]:
    """The lines of the image's /etc/<name> split on ':', read without following any symlink."""
    fds: list[int] = []
    try:
        fds.append(os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW))
        fds.append(os.open("etc", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fds[-1]))
        fds.append(os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fds[-1]))
        data = os.read(fds[-1], _MAX_ACCOUNT_FILE)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return []
        raise Fault(FaultCode.CORRUPT_DATA, f"{label}: cannot read the image's /etc/{name} ({exc.strerror})") from None
    finally:
        for fd in fds:
            os.close(fd)
    rows = [line.split(":") for line in data.decode("utf-8", "replace").splitlines()]
    return [row for row in rows if len(row) >= 4 and row[2].isdigit() and (name == "group" or row[3].isdigit())]
