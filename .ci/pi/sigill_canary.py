"""Executes one dotprod instruction (UDOT, Armv8.2): a Pi 4's Cortex-A72 lacks it, a Pi 5's A76 has it.

Under QEMU_CPU=cortex-a72 this must die of SIGILL (exit 132), as it would on a real Pi 4: proof that the
emulation is strict enough for a SIGILL in alprd's dependencies to show up in the smoke test.
"""

import ctypes
import mmap
import struct

UDOT_V0_V1_V2 = 0x6E829420  # udot v0.4s, v1.16b, v2.16b
RET = 0xD65F03C0

page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(struct.pack("<II", UDOT_V0_V1_V2, RET))
ctypes.CFUNCTYPE(None)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
print("udot executed")
