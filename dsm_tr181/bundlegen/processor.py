"""A platform template and app metadata applied to a bundle config, as BundleGen's bundle processor does.

:func:`check_compatible` refuses an app the platform cannot run (graphics, features,
network type, storage sizes, RAM); :func:`apply` then edits the config (and writes the
few files the plugins expect into the root filesystem) step by step, in BundleGen's
order: ociVersion, process (DobbyInit, env, rlimits), root, mounts, resources, GPU
(mounts, env, libraries, devices), Dobby plugin libraries, users and groups,
capabilities, hostname, AppArmor, seccomp, then the ``rdkPlugins`` (networking, storage,
logging, devicemapper, ipc, minidump, oomcrash, thunder, gpu) and the OCI hooks.

Target runtime ``dobby``: ``ociVersion`` ``1.0.2-dobby`` with ``rdkPlugins`` (plain 1.0.2 with
hooks when the platform asks for ``dobby.generateCompliantConfig``); ``runc``/``crun``: plain
OCI 1.0.2, no DobbyInit and no plugins (BundleGen's ``--crun``).

Deliberate differences from BundleGen (each would crash it or is a bug of its own):
capabilities are listed sorted (BundleGen lists a Python set: any order); sections a
platform leaves out (``envvar``, ``gpu`` lists, ``network.options``) are empty instead of
a crash; logging follows ``logging.mode`` alone (BundleGen mis-nests two ``elif``\\ s and
fails on ``journald`` with a ``limit``); ``ipc``/``minidump``/``oomcrash``/``thunder``/GPU
plugins are not added for runc/crun (BundleGen fails with a KeyError there); /etc/hosts
holds ``127.0.0.1\\tlocalhost`` plus a newline (BundleGen writes a stray quote); removing an
image library never follows a symlink out of the root filesystem (BundleGen's realpath
resolves it on the build host); an app asking for more RAM than ``hardware.maxRam`` is refused
(BundleGen clamps the limit with a warning; the issue asks for a clear error). The library
choice of the ``normal`` mode reads ELF version definitions itself (BundleGen runs
``readelf -V``, with the same result). ``createmountpoints`` and ``.ipk`` output are not offered.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from dataclasses import dataclass
from typing import Any

from dsm_tr181.bundlegen import rootfs as root_files
from dsm_tr181.bundlegen.errors import BundleError
from dsm_tr181.bundlegen.libraries import LibraryMatcher

RUNTIMES = ("dobby", "runc", "crun")
LIB_MODES = ("normal", "image", "host")
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_FSETID", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtpezy]?)(?:i?b)?\s*", re.IGNORECASE)
_APP_REQUIRED = ("id", "type", "graphics", "network", "storage", "resources")
_NSSWITCH = "hosts:     files mdns4_minimal [NOTFOUND=return] dns mdns4\nprotocols: files\n"
_HOOKS = ("createRuntime", "createContainer", "poststart", "poststop")


@dataclass(frozen=True)
class Options:
    runtime: str = "dobby"
    lib_matching: str = "normal"
    walk_dependencies: bool = True

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise BundleError(f"unknown target runtime {self.runtime!r} (known: {', '.join(RUNTIMES)})")
        if self.lib_matching not in LIB_MODES:
            raise BundleError(f"unknown library matching mode {self.lib_matching!r} (known: {', '.join(LIB_MODES)})")

    @property
    def dobby(self) -> bool:
        return self.runtime == "dobby"


def parse_size(text: Any) -> int:
    """``"60M"`` → 62914560: humanfriendly's parse_size with binary units, as BundleGen uses it."""
    match = _SIZE.fullmatch(str(text))
    if match is None:
        raise BundleError(f"{text!r} is not a size such as 512K, 60M or 1G")
    power = " kmgtpezy".index(match[2].lower() or " ")
    return int(float(match[1]) * 1024**power)


def check_app(app: dict[str, Any]) -> None:
    """The app metadata's required members and their types (BundleGen's schema, in short)."""
    missing = [key for key in _APP_REQUIRED if key not in app]
    if missing:
        raise BundleError(f"app metadata: missing {', '.join(missing)}")
    if not isinstance(app["id"], str) or not app["id"]:
        raise BundleError("app metadata: id must be a non-empty string")
    if not isinstance(app["graphics"], bool):
        raise BundleError("app metadata: graphics must be true or false")
    for key in ("network", "storage", "resources"):
        if not isinstance(app[key], dict):
            raise BundleError(f"app metadata: {key} must be an object")
    if "ram" not in app["resources"]:
        raise BundleError("app metadata: resources.ram is required")
    for key in ("features", "mounts"):
        if not isinstance(app.get(key, []), list):
            raise BundleError(f"app metadata: {key} must be a list")


def check_compatible(platform: dict[str, Any], app: dict[str, Any]) -> None:
    """Refuse, naming why, an app that needs what the platform lacks."""
    if app["graphics"] and not platform["hardware"].get("graphics"):
        raise BundleError("the app needs graphics, the platform has no graphics output")
    supported = platform["rdk"].get("supportedFeatures")
    if supported:
        missing = [feature for feature in app.get("features", []) if feature not in set(supported)]
        if missing:
            raise BundleError(f"the app needs features the platform does not support: {', '.join(missing)}")
    network = app["network"].get("type") if app.get("network") else None
    if network and network not in platform["network"].get("options", []):
        raise BundleError(f"the app needs {network} networking, which the platform does not support")
    max_ram = platform["hardware"].get("maxRam")
    if max_ram and parse_size(app["resources"]["ram"]) > parse_size(max_ram):
        # BundleGen clamps the limit to the platform's with a warning; a device refuses instead.
        raise BundleError(f"the app needs {app['resources']['ram']} of RAM, the platform gives at most {max_ram}")
    storage = app.get("storage") or {}
    limits = platform.get("storage") or {}
    for kind in ("persistent", "temp"):
        wanted = storage.get(kind) or []
        if not wanted:
            continue
        if kind == "persistent" and not limits.get("persistent"):
            raise BundleError("the app needs persistent storage, the platform defines none")
        rules = limits.get(kind) or {}
        total = 0
        for item in wanted:
            size = parse_size(item.get("size"))
            if rules.get("maxSize") and size > parse_size(rules["maxSize"]):
                raise BundleError(f"{kind} storage of {item.get('size')} exceeds the platform's {rules['maxSize']}")
            if rules.get("minSize") and size < parse_size(rules["minSize"]):
                size = parse_size(rules["minSize"])
                if kind == "persistent":
                    item["size"] = rules["minSize"]  # BundleGen raises it to the minimum
            total += size
        if rules.get("maxTotalSize") and total > parse_size(rules["maxTotalSize"]):
            raise BundleError(f"{kind} storage of {total} bytes in all exceeds the platform's {rules['maxTotalSize']}")


class _Processor:
    def __init__(self, config: dict[str, Any], platform: dict[str, Any], app: dict[str, Any], rootfs: str,
                 options: Options) -> None:  # fmt: skip
        self.config = config
        self.platform = platform
        self.app = app
        self.rootfs = rootfs
        self.options = options
        self.libraries = LibraryMatcher(
            platform, rootfs, self.bind_mount, options.lib_matching, options.walk_dependencies
        )

    def bind_mount(self, source: str, destination: str, options: list[str] | None = None) -> None:
        mount = {"source": source, "destination": destination, "type": "bind",
                 "options": options or ["rbind", "nosuid", "nodev", "ro"]}  # fmt: skip
        if mount not in self.config["mounts"]:
            self.config["mounts"].append(mount)

    def add_mount(self, template: dict[str, Any]) -> None:
        mount = dict(template)
        if "source" in mount:
            mount["source"] = str(mount["source"]).format(id=self.app["id"])
        if "X-mount.no" not in mount.get("options", []):
            self.config["mounts"].append(mount)

    def plugin(self, name: str, data: Any, **extra: Any) -> None:
        self.config["rdkPlugins"][name] = {"required": True, **extra, "data": data}

    def compliant(self) -> bool:
        return bool((self.platform.get("dobby") or {}).get("generateCompliantConfig"))

    def run(self) -> None:
        steps = [
            self.oci_version, self.process, self.root, self.mounts, self.resources, self.gpu,
            self.plugin_libraries, self.users, self.capabilities, self.hostname, self.apparmor, self.seccomp,
            self.rdk_plugins, self.network, self.storage, self.logging, self.dynamic_devices, self.optional_plugins,
            self.gpu_plugin, self.hooks,
        ]  # fmt: skip
        for step in steps:
            step()

    def oci_version(self) -> None:
        self.config["ociVersion"] = "1.0.2-dobby" if self.options.dobby and not self.compliant() else "1.0.2"

    def process(self) -> None:
        process = self.config["process"]
        if self.options.dobby:
            init = (self.platform.get("dobby") or {}).get("dobbyInitPath") or "/usr/libexec/DobbyInit"
            args: list[str] = []
            for arg in process["args"]:
                args += shlex.split(arg.replace("\\@", " ")) if " " in arg else [arg]
            process["args"] = [init, *args]
            self.bind_mount(init, init)
        process["env"] += list(self.platform.get("envvar") or [])
        process["rlimits"] += list(self.platform.get("resourceLimits") or [])

    def root(self) -> None:
        root = self.platform.get("root") or {}
        if root.get("readonly"):
            self.config["root"]["readonly"] = root["readonly"]
        if root.get("path"):
            self.config["root"]["path"] = str(root["path"]).format(id=self.app["id"])

    def mounts(self) -> None:
        for mount in [*(self.platform.get("mounts") or []), *(self.app.get("mounts") or [])]:
            self.add_mount(mount)

    def resources(self) -> None:
        resources = self.config["linux"].setdefault("resources", {})
        devices = resources.setdefault("devices", [])
        deny_all = {"allow": False, "access": "rwm"}
        if deny_all not in devices:
            devices.append(deny_all)
        max_ram = self.platform["hardware"].get("maxRam")
        if max_ram:
            limit = min(parse_size(self.app["resources"]["ram"]), parse_size(max_ram))
            resources["memory"] = {"limit": limit}

    def gpu(self) -> None:
        if self.app.get("graphics") is not True:
            return
        gpu = self.platform.get("gpu") or {}
        for mount in gpu.get("extraMounts") or []:
            self.add_mount(mount)
        self.config["process"]["env"] += list(gpu.get("envvar") or [])
        for lib in gpu.get("gfxLibs") or []:
            self.libraries.mount(lib["src"], lib["dst"])
        socket = (gpu.get("westeros") or {}).get("hostSocket")
        if socket:
            self.bind_mount(socket, "/tmp/westeros", ["rbind", "nosuid", "nodev"])
        self.config["process"]["env"].append(f"WAYLAND_DISPLAY={gpu.get('waylandDisplay') or 'westeros'}")
        linux = self.config["linux"]
        linux.setdefault("devices", [])
        cgroup = linux.setdefault("resources", {}).setdefault("devices", [])
        for dev in gpu.get("devs") or []:
            linux["devices"].append({key: dev[key] for key in ("path", "type", "major", "minor")})
            cgroup.append({"allow": True, **{key: dev[key] for key in ("type", "major", "minor", "access")}})

    def plugin_libraries(self) -> None:
        if self.options.dobby:
            for lib in (self.platform.get("dobby") or {}).get("pluginDependencies") or []:
                self.libraries.mount_or_use_image(lib, lib)

    def users(self) -> None:
        settings = self.platform.get("usersAndGroups")
        linux = self.config["linux"]
        if settings:
            user = settings.get("user") or {}
            for key in ("uid", "gid", "additionalGids"):
                if user.get(key):
                    self.config["process"]["user"][key] = user[key]
        if self.platform.get("disableUserNamespacing"):
            linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "user"]
            linux.pop("uidMappings", None)
            linux.pop("gidMappings", None)
            return
        linux["uidMappings"] = list((settings or {}).get("uidMap") or [])
        linux["gidMappings"] = list((settings or {}).get("gidMap") or [])

    def capabilities(self) -> None:
        wanted = set(self.platform["capabilities"] if self.platform.get("capabilities") is not None else DEFAULT_CAPS)
        requested = self.app.get("capabilities") or {}
        wanted |= set(requested.get("add") or [])
        wanted -= set(requested.get("drop") or [])
        caps = self.config["process"]["capabilities"]
        for key in ("bounding", "permitted", "effective", "inheritable", "ambient"):
            caps[key] = sorted(wanted)

    def hostname(self) -> None:
        if self.platform.get("hostname"):
            self.config["hostname"] = str(self.platform["hostname"]).format(id=self.app["id"])

    def apparmor(self) -> None:
        if self.platform.get("apparmorProfile"):
            self.config["process"]["apparmorProfile"] = self.platform["apparmorProfile"]

    def seccomp(self) -> None:
        if self.platform.get("seccomp"):
            self.config["linux"]["seccomp"] = self.platform["seccomp"]

    def rdk_plugins(self) -> None:
        if not self.options.dobby:
            return
        self.config["rdkPlugins"] = {}
        plugin_dir = (self.platform.get("dobby") or {}).get("pluginDir")
        if plugin_dir:
            self.bind_mount(plugin_dir, plugin_dir)

    def network(self) -> None:
        if not self.options.dobby or not self.app.get("network"):
            return
        self.plugin("networking", self.app["network"])
        root_files.write_file(self.rootfs, "etc/nsswitch.conf", _NSSWITCH, 0o644)
        root_files.write_file(self.rootfs, "etc/hosts", "127.0.0.1\tlocalhost\n", 0o644)

    def storage(self) -> None:
        if not self.options.dobby:
            return
        storage = self.app.get("storage") or {}
        persistent = (self.platform.get("storage") or {}).get("persistent") or {}
        if storage.get("persistent"):
            loopbacks = []
            for item in storage["persistent"]:
                path = item["path"]
                image = hashlib.sha256(path.encode("ascii")).hexdigest() + ".img"
                loopbacks.append({
                    "destination": path, "flags": 14, "fstype": persistent.get("fstype") or "ext4",
                    "source": os.path.join(persistent.get("storageDir") or "", self.app["id"], image),
                    "imgsize": parse_size(item["size"]),
                })  # fmt: skip
                root_files.make_dirs(self.rootfs, path)
            self.plugin("storage", {"loopback": loopbacks})
        user = self.config["process"].get("user") or {}
        for item in storage.get("temp") or []:
            options = ["nosuid", "strictatime", "mode=755", f"size={parse_size(item['size'])}"]
            options += [f"{key}={user[key]}" for key in ("uid", "gid") if user.get(key)]
            self.config["mounts"].append(
                {"destination": item["path"], "type": "tmpfs", "source": "tmpfs", "options": options}
            )
            root_files.make_dirs(self.rootfs, item["path"])
        optional = [m for m in self.config["mounts"] if "X-dobby.optional" in (m.get("options") or [])]
        if optional:
            for mount in optional:
                self.config["mounts"].remove(mount)
                mount["options"] = [o for o in mount["options"] if o != "X-dobby.optional"]
            plugin = self.config["rdkPlugins"].setdefault("storage", {"required": True, "data": {}})
            plugin["data"]["dynamic"] = optional

    def logging(self) -> None:
        logging = self.platform.get("logging")
        if not self.options.dobby or not logging:
            return
        self.config["process"]["terminal"] = True
        mode = logging.get("mode")
        data: dict[str, Any]
        if mode == "file":
            data = {"sink": "file", "fileOptions": {"path": os.path.join(logging["logDir"], f"{self.app['id']}.log")}}
            if logging.get("limit"):
                data["fileOptions"]["limit"] = logging["limit"]
            self.config["annotations"]["run.oci.hooks.stderr"] = "/dev/stderr"
            self.config["annotations"]["run.oci.hooks.stdout"] = "/dev/stdout"
        elif mode in ("journald", "devnull"):
            data = {"sink": mode}
        else:
            raise BundleError(f"platform logging.mode {mode!r} is not file, journald or devnull")
        if logging.get("journaldOptions"):
            data["journaldOptions"] = logging["journaldOptions"]
        self.plugin("logging", data)

    def dynamic_devices(self) -> None:
        if not self.options.dobby or not self.platform["hardware"].get("graphics"):
            return
        dynamic = [dev["path"] for dev in (self.platform.get("gpu") or {}).get("devs") or [] if dev.get("dynamic")]
        if dynamic:
            self.plugin("devicemapper", {"devices": dynamic})

    def optional_plugins(self) -> None:
        if not self.options.dobby:
            return
        for name in ("ipc", "minidump", "oomcrash"):
            if (self.app.get(name) or {}).get("enable") and self.platform.get(name):
                self.plugin(name, self.platform[name])
        if self.app.get("thunder"):
            self.plugin("thunder", self.app["thunder"], dependsOn=["networking"])

    def gpu_plugin(self) -> None:
        memory = self.app["resources"].get("gpu")
        if self.options.dobby and memory:
            self.plugin("gpu", {"memory": parse_size(memory)})

    def hooks(self) -> None:
        if not self.options.dobby or not self.compliant() or not self.config["rdkPlugins"]:
            return
        dobby = self.platform["dobby"]
        launcher = dobby.get("hookLauncherExecutablePath") or "/usr/bin/DobbyPluginLauncher"
        parameters = dobby.get("hookLauncherParametersPath")
        if not parameters:
            raise BundleError("platform: dobby.hookLauncherParametersPath is required with generateCompliantConfig")
        parameters = str(parameters).format(id=self.app["id"])
        if os.path.basename(parameters) != "config.json":
            parameters = os.path.join(parameters, "config.json")
        self.config["hooks"] = {
            hook: [{"path": launcher, "args": ["DobbyPluginLauncher", "-h", hook, "-c", parameters]}] for hook in _HOOKS
        }


def apply(config: dict[str, Any], platform: dict[str, Any], app: dict[str, Any], rootfs: str, options: Options) -> None:
    """Edit ``config`` (and ``rootfs``) for the platform; BundleError when the app cannot run on it."""
    check_app(app)
    check_compatible(platform, app)
    _Processor(config, platform, app, rootfs, options).run()
