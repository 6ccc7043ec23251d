#!/usr/bin/env python3
"""Samples a running XDV guest's call stacks through QEMU's monitor.

`tools/profile-guest.py` sees only the instruction pointer, so a hot leaf such as
SHA-256's compression function cannot be charged to its callers. This one walks the
frame-pointer chain, so the kernel must be built with frame pointers:

    RUSTFLAGS="-C force-frame-pointers=yes" cargo build --release \\
        --manifest-path kernel/image/Cargo.toml --target-dir target/kernel-fp

Boot that image (for a benchmark: copy it over target/kernel/release/xdv-kernel, which
cargo then considers up to date; build normally afterwards to undo), start QEMU through
the xdv tools with XDV_QEMU_MONITOR=DIR, then:

    tools/profile-guest-stacks.py DIR/vm1.sock target/kernel-fp/release/xdv-kernel [seconds] [depth]

Each sample stops the VM (`stop`), reads the boot CPU's RIP and RBP, follows up to
`depth` frames (`x /2gx` of each saved RBP: the caller's RBP and the return address),
and lets it run again (`cont`), so the VM runs slower while sampled. Printed: the share
of samples in which each function appears anywhere on the stack (inclusive), and
SHA-256 samples charged to the first caller outside the hashing crates.
"""
import collections, re, socket, subprocess, sys, time

HASHING = ("sha2", "digest", "Digest", "compress", "core::", "block_buffer", "finalize", "update")


def short(f):
    f = re.sub(r"<[^<>]*>", "", f)
    f = re.sub(r"<[^<>]*>", "", f)
    return f[:110]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sock_path, elf = sys.argv[1], sys.argv[2]
    secs = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    depth = int(sys.argv[4]) if len(sys.argv) > 4 else 12
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    s.settimeout(2.0)
    buf = b""

    def cmd(c):
        nonlocal buf
        if c:
            s.sendall(c.encode() + b"\n")
        while b"(qemu) " not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("the monitor closed (the VM ended?)")
            buf += chunk
        out, _, buf = buf.partition(b"(qemu) ")
        return out.decode(errors="replace")

    cmd(None)
    stacks = []
    end = time.time() + secs
    while time.time() < end:
        cmd("stop")
        out = cmd("info registers")
        rip = re.search(r"RIP=([0-9a-f]+)", out)
        rbp = re.search(r"RBP=([0-9a-f]+)", out)
        if not rip or not rbp:
            cmd("cont")
            continue
        st = [int(rip.group(1), 16)]
        fp = int(rbp.group(1), 16)
        for _ in range(depth):
            # Kernel stacks live in identity-mapped RAM above 1 MiB, below 4 GiB.
            if fp < 0x100000 or fp > 0xFFFF_FFFF:
                break
            words = re.findall(r"0x([0-9a-f]{16})", cmd(f"x /2gx {fp:#x}").split(":", 1)[-1])
            if len(words) < 2:
                break
            caller_fp, ret = int(words[0], 16), int(words[1], 16)
            if ret == 0:
                break
            st.append(ret)
            if caller_fp <= fp:
                break
            fp = caller_fp
        cmd("cont")
        stacks.append(st)
        time.sleep(0.01)
    if not stacks:
        sys.exit("no samples")
    addrs = sorted({a for st in stacks for a in st})
    lines = subprocess.run(["addr2line", "-f", "-C", "-e", elf] + [hex(a) for a in addrs],
                           capture_output=True, text=True).stdout.splitlines()
    name = {a: short(lines[2 * i]) for i, a in enumerate(addrs)}
    inclusive = collections.Counter()
    sha = collections.Counter()
    for st in stacks:
        names = [name[a] for a in st]
        for n in set(names):
            inclusive[n] += 1
        if any("sha2::" in n or "compress256" in n for n in names[:2]):
            sha[next((n for n in names if not any(k in n for k in HASHING)), "?")] += 1
    total = len(stacks)
    print(f"{total} stacks of the boot CPU over {secs:.0f} s")
    print("--- inclusive (anywhere on the stack)")
    for n, c in inclusive.most_common(40):
        print(f"{100.0 * c / total:6.1f}% {c:6d}  {n}")
    print("--- SHA-256 by its first caller outside the hashing crates")
    for n, c in sha.most_common(15):
        print(f"{100.0 * c / total:6.1f}% {c:6d}  {n}")


if __name__ == "__main__":
    main()
