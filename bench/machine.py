"""What a benchmark report must name: the machine, its memory and THP setting, the versions.

Shared by every script in ``bench/``. Reads ``/proc`` and ``/sys`` directly (Linux); on other
systems the fields it cannot read say ``unknown``.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")
REPO = Path(__file__).resolve().parent.parent


def _read(path: str | Path, default: str = "unknown") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def meminfo_bytes(field: str) -> int | None:
    """A ``/proc/meminfo`` field (e.g. ``MemAvailable``) in bytes, None if unreadable."""
    for line in _read("/proc/meminfo", "").splitlines():
        name, _, rest = line.partition(":")
        if name == field:
            return int(rest.split()[0]) * 1024
    return None


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, with its family/model numbers and widest
    vector extension (a VM's model name may not say which generation it is)."""
    fields: dict[str, str] = {}
    for line in _read("/proc/cpuinfo", "").splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" not in fields:
        return name
    flags = set(fields.get("flags", "").split())
    vec = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name} (family {fields['cpu family']}, model {fields.get('model', '?')}, {vec})"


def cache_bytes(level: int) -> int | None:
    """Size in bytes of CPU 0's level-``level`` data (or unified) cache, None if unknown."""
    for idx in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        if _read(idx / "level") == str(level) and _read(idx / "type") != "Instruction":
            size = _read(idx / "size")
            units = {"K": 2**10, "M": 2**20}
            if size[-1:] in units and size[:-1].isdigit():
                return int(size[:-1]) * units[size[-1]]
    return None


def caches() -> str:
    """Cache sizes of CPU 0 as ``L1d 32K, L2 1024K, L3 32768K``."""
    out = []
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")):
        kind = _read(idx / "type")
        if kind == "Instruction":
            continue
        level = _read(idx / "level")
        out.append(f"L{level}{'d' if kind == 'Data' else ''} {_read(idx / 'size')}")
    return ", ".join(out) or "unknown"


def thp_setting() -> str:
    """The kernel's transparent-huge-page mode, the bracketed word of sysfs ``enabled``."""
    text = _read(THP_ENABLED)
    if "[" in text:
        return text.split("[", 1)[1].split("]", 1)[0]
    return text


def versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of ``packages`` (``missing`` when not installed), plus Python."""
    out = {"python": platform.python_version()}
    for p in packages:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "missing"
    return out


def git_commit() -> str:
    """The repository's HEAD commit (with ``+dirty`` if the tree has changes), or unknown."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def describe(packages: tuple[str, ...]) -> dict[str, object]:
    """Everything a report's header needs, as one JSON-able dict."""
    avail = meminfo_bytes("MemAvailable")
    total = meminfo_bytes("MemTotal")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "caches": caches(),
        "mem_total_gib": round(total / 2**30, 1) if total else None,
        "mem_available_gib": round(avail / 2**30, 1) if avail else None,
        "thp_enabled": thp_setting(),
        "load_average": _read("/proc/loadavg").split()[:3],
        "kernel": platform.release(),
        "versions": versions(packages),
        "git_commit": git_commit(),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
    }


def header_markdown(info: dict[str, object]) -> str:
    """The machine/versions/command block at the top of every report."""
    v = info["versions"]
    assert isinstance(v, dict)
    vers = ", ".join(f"{k} {val}" for k, val in v.items())
    load = " ".join(info["load_average"])  # type: ignore[arg-type]
    return "\n".join(
        [
            f"- **Date**: {info['date']}, commit `{info['git_commit']}`",
            f"- **Machine**: {info['cpu']}, {info['cores']} cores, {info['caches']}; "
            f"{info['mem_total_gib']} GiB RAM ({info['mem_available_gib']} GiB available at "
            f"start); kernel {info['kernel']}; load average at start {load}",
            f"- **Transparent huge pages** (`{THP_ENABLED}`): `{info['thp_enabled']}`",
            f"- **Versions**: {vers}",
            f"- **Command**: `{info['command']}`",
        ]
    )
