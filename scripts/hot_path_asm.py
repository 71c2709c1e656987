#!/usr/bin/env python3
"""The fast paths as the compiler emitted them: instructions from entry to the first `ret`
of vmarena's malloc and free, for Rust (`GlobalAlloc` in examples/pairs_loop) and C
(`libvmarena.so`), and a check that none of them loads through the GOT.

A static that an inlinable public function names is exported, and rustc reaches exported
statics through the GOT even from its own crate (see src/global.rs); this fails if that
comes back. In the C library the thread-local heap's offset is the one GOT load allowed:
initial-exec TLS in a shared object has its offset in the GOT, the load right before the
`%fs:` access.

Usage: scripts/hot_path_asm.py [--print]   (builds what it needs, release profile)
"""
import re
import subprocess
import sys

RUST_BIN = "target/release/examples/pairs_loop"
C_LIB = "target/release/libvmarena.so"
FUNCTIONS = [
    (RUST_BIN, "<vmarena::global::VmArena as core::alloc::global::GlobalAlloc>::alloc"),
    (RUST_BIN, "<vmarena::global::VmArena as core::alloc::global::GlobalAlloc>::dealloc"),
    (C_LIB, "vmarena::raw::c::malloc"),
    (C_LIB, "vmarena::raw::free"),
]


def fast_path(binary, name):
    """The instructions of `name` from its entry to its first `ret`."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", binary],
                         capture_output=True, text=True, check=True).stdout
    start = out.find(f"<{name}>:\n")
    if start < 0:
        sys.exit(f"{name} not found in {binary}")
    body = []
    for line in out[start:].splitlines()[1:]:
        m = re.match(r"\s*[0-9a-f]+:\s+(.*)", line)
        if not m:
            break
        body.append(m.group(1).split("#")[0].strip() + ("  #" + line.split("#")[1] if "#" in line else ""))
        if m.group(1).startswith("ret"):
            break
    return body


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "pairs_loop"], check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "vmarena-c"], check=True)
    failed = False
    for binary, name in FUNCTIONS:
        body = fast_path(binary, name)
        print(f"{name} ({binary}): {len(body)} instructions to ret")
        for i, insn in enumerate(body):
            if "--print" in sys.argv:
                print("    " + insn)
            # Calls and jumps through the GOT (to slow paths in other crates) load no data.
            got = "_DYNAMIC" in insn and not insn.startswith(("j", "call"))
            tls_offset = got and i + 1 < len(body) and "%fs:" in body[i + 1]
            if got and not tls_offset:
                print(f"  loads through the GOT: {insn}")
                failed = True
    if failed:
        sys.exit("a fast path reads a static through the GOT (an inlinable public function names it?)")


if __name__ == "__main__":
    main()
