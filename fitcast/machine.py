"""The machine fitcast runs on: what its CPU can do, and where measurements of it are cached.

Defaults that depend on the hardware (training precision and layout, int8 kernels, the
inference runtime, thread counts) are chosen from :class:`Cpu` capabilities where the
flags decide, and from a short measurement cached per machine (:class:`MeasurementCache`)
where they cannot.  Every choice is a :class:`Choice`: the value, where it came from and
why, which is what ``fitcast doctor`` prints.

Capabilities that matter (read from ``/proc/cpuinfo`` on Linux):

- **native bf16** (``avx512_bf16``, ``amx_bf16``; ``bf16`` on Arm): bf16 autocast is a fast
  path; without it PyTorch emulates bf16 and training runs an order of magnitude slower.
- **int8 dot products** (``avx512_vnni``, ``avx_vnni``, ``amx_int8``; ``asimddp`` on Arm):
  without them x86 int8 kernels multiply u8 x s8 into saturating 16-bit pair sums
  (``vpmaddubsw``), which overflows for 8-bit weights; 7-bit weights never overflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
ARM_BF16_FLAGS = frozenset({"bf16"})
ARM_INT8_DOT_FLAGS = frozenset({"asimddp"})
# The flags worth showing beside a benchmark number (the rest do not change fitcast's speed).
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
               "amx_bf16", "asimd", "asimddp", "bf16", "i8mm")


@dataclass(frozen=True)
class Cpu:
    """The CPU's identity and the capability flags fitcast's choices depend on."""

    model: str
    arch: str  # platform.machine(): x86_64, aarch64, arm64, ...
    logical: int  # logical CPUs this process may run on
    cores: int  # physical cores among them
    flags: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_cpuinfo(cls, text: str, *, arch: str, logical: int) -> Cpu:
        """Parse ``/proc/cpuinfo`` text (x86 ``flags``, Arm ``Features``)."""
        model, flags = "", frozenset[str]()
        cores: set[tuple[str, str]] = set()
        physical = core = ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip().lower(), value.strip()
            if key in ("model name", "hardware", "cpu model") and not model:
                model = value
            elif key in ("flags", "features") and not flags:
                flags = frozenset(value.split())
            elif key == "physical id":
                physical = value
            elif key == "core id":
                core = value
                cores.add((physical, core))
        n_cores = min(len(cores), logical) if cores else logical
        return cls(model=model or platform.processor() or arch, arch=arch, logical=logical, cores=max(1, n_cores),
                   flags=flags)

    @classmethod
    def detect(cls) -> Cpu:
        return _detect()

    @property
    def is_x86(self) -> bool:
        return self.arch.lower() in ("x86_64", "amd64", "i686", "x86")

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware (else PyTorch emulates it, slowly)."""
        return bool(self.flags & (BF16_FLAGS if self.is_x86 else ARM_BF16_FLAGS))

    @property
    def int8_dot(self) -> bool:
        """int8 dot-product instructions (VNNI / AMX on x86, DotProd on Arm)."""
        return bool(self.flags & (INT8_DOT_FLAGS if self.is_x86 else ARM_INT8_DOT_FLAGS))

    @property
    def int8_saturates(self) -> bool:
        """Whether int8 kernels here sum u8 x s8 pairs into saturating 16 bits (x86 without
        VNNI): 8-bit weights can overflow there, 7-bit weights cannot."""
        return self.is_x86 and not self.int8_dot

    def shown_flags(self) -> list[str]:
        return [f for f in SHOWN_FLAGS if f in self.flags]

    def summary(self) -> str:
        """One line for benchmark tables: model, cores and the flags that matter."""
        flags = " ".join(self.shown_flags()) or "no SIMD flags read"
        return f"{self.model}, {self.cores} cores / {self.logical} threads [{flags}]"

    @property
    def fingerprint(self) -> str:
        """Stable id of this kind of machine: measurements cached under it stay valid."""
        key = json.dumps([self.model, self.arch, self.logical, sorted(self.flags)])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "arch": self.arch, "logical": self.logical, "cores": self.cores,
                "flags": self.shown_flags(), "native_bf16": self.native_bf16, "int8_dot": self.int8_dot,
                "fingerprint": self.fingerprint}


@lru_cache(maxsize=1)
def _detect() -> Cpu:
    arch = platform.machine() or "unknown"
    try:
        logical = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        logical = os.cpu_count() or 1
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    return Cpu.from_cpuinfo(text, arch=arch, logical=logical)


def cpu_name() -> str:
    """The CPU's model name."""
    return Cpu.detect().model


def machine() -> str:
    """The machine in one line, for benchmark reports and device profiles (flags included)."""
    return Cpu.detect().summary()


Source = Literal["flag", "setting", "capability", "measured", "default"]


@dataclass(frozen=True)
class Choice:
    """A value chosen for this machine, where it came from and why."""

    value: Any
    source: Source
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source, "reason": self.reason}


def cache_dir() -> Path:
    """fitcast's per-user cache: ``$FITCAST_CACHE``, else ``$XDG_CACHE_HOME/fitcast``."""
    base = os.environ.get("FITCAST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "fitcast"
    )
    return Path(base)


class MeasurementCache:
    """Short measurements of this machine, kept in one JSON file per machine fingerprint.

    A measurement is keyed by what it depends on (e.g. the library versions); a stale or
    unreadable file is measured again, and a cache that cannot be written only costs time.
    """

    def __init__(self, directory: Path | None = None, cpu: Cpu | None = None) -> None:
        self.cpu = cpu or Cpu.detect()
        self.path = (directory or cache_dir()) / f"machine-{self.cpu.fingerprint}.json"

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> Any | None:
        entry = self._load().get(key)
        return entry.get("value") if isinstance(entry, dict) else None

    def put(self, key: str, value: Any) -> None:
        from fitcast.storage import atomic_write_text

        data = self._load()
        data[key] = {"value": value, "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True))
        except OSError:
            pass

    def measure(self, key: str, fn: Callable[[], Any]) -> tuple[Any, bool]:
        """``(value, cached)``: the cached value of ``key``, else ``fn()`` measured now and kept."""
        value = self.get(key)
        if value is not None:
            return value, True
        value = fn()
        self.put(key, value)
        return value, False
