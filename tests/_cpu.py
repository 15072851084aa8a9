"""Which CPU family a bit-exact fixture belongs to.

The seed's and the record's initial weights come from `torch.nn.init.orthogonal_`, a QR
factorisation done by MKL's LAPACK, whose code path (and so the last bit of every value)
depends on the CPU's vendor: the record's own code gives other bits on an Intel Xeon than on
an AMD EPYC. A bit-exact fixture is therefore generated once per vendor, and a test compares
against the one made on this kind of CPU (or says that none was).
"""

from __future__ import annotations

from pathlib import Path


def cpu_vendor() -> str:
    """/proc/cpuinfo's vendor_id ("AuthenticAMD", "GenuineIntel"), else "unknown"."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return "unknown"
    for line in text.splitlines():
        if line.startswith("vendor_id"):
            return line.split(":", 1)[1].strip() or "unknown"
    return "unknown"
