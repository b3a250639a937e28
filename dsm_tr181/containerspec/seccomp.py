"""The default seccomp profile of an unprivileged execution unit.

A deny list of what Docker's default profile blocks for a container without extra
capabilities: kernel modules, kexec, mounts, namespaces (unshare/setns and clone with a
namespace flag), keyrings, bpf, perf, ptrace and cross-process memory access, clock and
swap control, reboot, and the obsolete calls. Denied calls fail with EPERM; ``clone3``
fails with ENOSYS so that C libraries fall back to ``clone``, whose flags can be checked.
runc and crun skip names their libseccomp does not know.
"""

from __future__ import annotations

import platform
from typing import Any

EPERM, ENOSYS = 1, 38

DENIED: tuple[str, ...] = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "get_mempolicy",
    "init_module", "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie",
    "mbind", "mount", "mount_setattr", "move_mount", "move_pages", "name_to_handle_at", "nfsservctl",
    "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root", "process_vm_readv",
    "process_vm_writev", "ptrace", "query_module", "quotactl", "quotactl_fd", "reboot", "request_key",
    "set_mempolicy", "setns", "settimeofday", "stime", "swapoff", "swapon", "syslog", "sysfs", "_sysctl",
    "umount", "umount2", "unshare", "uselib", "userfaultfd", "ustat", "vhangup", "vm86", "vm86old",
)  # fmt: skip

# clone(2) flags that create namespaces (flags are clone's first argument on these architectures).
NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}  # fmt: skip

ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "armv7l": ["SCMP_ARCH_ARM"],
    "armv8l": ["SCMP_ARCH_ARM"],
    "i686": ["SCMP_ARCH_X86"],
    "riscv64": ["SCMP_ARCH_RISCV64"],
}


def machine() -> str:
    return platform.machine()


def default_profile(arch: str) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object for a machine (``uname -m``)."""
    rules: list[dict[str, Any]] = [{"names": list(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}]
    rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    for flag in NAMESPACE_FLAGS.values():
        rules.append(
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }
        )
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ARCHITECTURES.get(arch, []), "syscalls": rules}
