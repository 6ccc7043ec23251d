#!/usr/bin/env python3
"""Samples a running XDV guest's instruction pointers through QEMU's monitor.

Start QEMU through the xdv tools with XDV_QEMU_MONITOR=DIR (each VM gets DIR/vmN.sock),
then: tools/profile-guest.py DIR/vm1.sock KERNEL_ELF [seconds] [hz] [cpu]

Every 1/hz s it asks `info registers -a`, takes RIP of the chosen vCPU (0: the boot CPU,
which runs the node's loop), and at the end resolves the addresses with addr2line and
prints the hottest functions: innermost (with inlining) and outermost (the real frame).
Under TCG a vCPU's RIP is exact at translation-block boundaries only, so a sample is the
start of the block being run: good for where time goes, not for single instructions.

`--stacks DIR/vm1.sock KERNEL_ELF [seconds] [depth]` samples the boot CPU's call stacks
instead, so a hot leaf such as SHA-256's compression function is charged to its callers.
It walks the frame-pointer chain, so the kernel must be built with frame pointers:

    RUSTFLAGS="-C force-frame-pointers=yes" cargo build --release \
        --manifest-path kernel/image/Cargo.toml --target-dir target/kernel-fp

and that image booted (for a benchmark: copy it over target/kernel/release/xdv-kernel
right after a normal build at the same commit, which cargo then considers up to date;
build normally afterwards to undo). Each sample stops the VM (`stop`), reads RIP and
RBP, follows up to `depth` frames (`x /2gx` of each saved RBP: the caller's RBP and the
return address) and lets it run again (`cont`), so the VM runs slower while sampled. It
prints the share of samples in which each function appears anywhere on the stack, and
the SHA-256 samples charged to the first caller outside the hashing crates.
"""
import collections, re, socket, subprocess, sys, time


class Monitor:
    """QEMU's human monitor on a unix socket: one command in, its output back."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.s.settimeout(2.0)
        self.buf = b""
        self.cmd(None)

    def cmd(self, c):
        if c:
            self.s.sendall(c.encode() + b"\n")
        while b"(qemu) " not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise SystemExit("the monitor closed (the VM ended?)")
            self.buf += chunk
        out, _, self.buf = self.buf.partition(b"(qemu) ")
        return out.decode(errors="replace")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--stacks":
        return stacks(sys.argv[2:])
    sock_path, elf = sys.argv[1], sys.argv[2]
    secs = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    hz = float(sys.argv[4]) if len(sys.argv) > 4 else 100.0
    cpu = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    mon = Monitor(sock_path)
    rips = collections.Counter()
    end = time.time() + secs
    n = 0
    while time.time() < end:
        out = mon.cmd("info registers -a")
        blocks = re.split(r"\nCPU#(\d+)", "\n" + out)
        # blocks: ['', '0', text, '1', text, ...]
        for i in range(1, len(blocks) - 1, 2):
            if int(blocks[i]) == cpu:
                m = re.search(r"RIP=([0-9a-f]{16})", blocks[i + 1])
                if m:
                    rips[int(m.group(1), 16)] += 1
                    n += 1
        time.sleep(1.0 / hz)
    addrs = sorted(rips)
    # addr2line -a prints each address, then a (function, file:line) pair per frame
    # of its inline chain, innermost first.
    res = subprocess.run(["addr2line", "-a", "-f", "-C", "-i", "-e", elf] + [hex(a) for a in addrs],
                         capture_output=True, text=True).stdout.splitlines()
    frames = {}
    cur = None
    k = 0
    while k < len(res):
        line = res[k]
        if line.startswith("0x"):
            cur = int(line, 16)
            frames[cur] = []
            k += 1
            continue
        func = line
        loc = res[k + 1] if k + 1 < len(res) else ""
        frames[cur].append((func, loc))
        k += 2
    inner = collections.Counter()
    outer = collections.Counter()
    anyframe = collections.Counter()
    for a, c in rips.items():
        fr = frames.get(a) or [("??", "")]
        inner[short(fr[0][0])] += c
        outer[short(fr[-1][0])] += c
        for f in set(short(x[0]) for x in fr):
            anyframe[f] += c
    print(f"{n} samples of CPU {cpu} over {secs:.0f} s")
    for title, ctr in (("innermost", inner), ("outermost (real frame)", outer),
                       ("anywhere in the inline chain", anyframe)):
        print(f"--- {title}")
        for f, c in ctr.most_common(25):
            print(f"{100.0 * c / max(n, 1):6.1f}% {c:6d}  {f}")


HASHING = ("sha2", "digest", "Digest", "compress", "core::", "block_buffer", "finalize", "update")


def stacks(args):
    """`--stacks SOCK ELF [seconds] [depth]`: call stacks of the boot CPU (module doc)."""
    if len(args) < 2:
        sys.exit(__doc__)
    elf = args[1]
    secs = float(args[2]) if len(args) > 2 else 10.0
    depth = int(args[3]) if len(args) > 3 else 12
    mon = Monitor(args[0])
    stacks = []
    end = time.time() + secs
    while time.time() < end:
        try:
            st = sample_stack(mon, depth)
        except (OSError, SystemExit) as e:
            # The VM ended (a benchmark finished): report what was sampled.
            print(f"sampling stopped: {e}", file=sys.stderr)
            break
        if st:
            stacks.append(st)
        time.sleep(0.01)
    if not stacks:
        sys.exit("no samples")
    report_stacks(stacks, elf, secs)


def sample_stack(mon, depth):
    """One stack of the boot CPU: RIP, then the return addresses up the RBP chain."""
    mon.cmd("stop")
    out = mon.cmd("info registers")
    rip = re.search(r"RIP=([0-9a-f]+)", out)
    rbp = re.search(r"RBP=([0-9a-f]+)", out)
    if not rip or not rbp:
        mon.cmd("cont")
        return None
    st = [int(rip.group(1), 16)]
    fp = int(rbp.group(1), 16)
    for _ in range(depth):
        # Kernel stacks live in identity-mapped RAM above 1 MiB, below 4 GiB.
        if fp < 0x100000 or fp > 0xFFFF_FFFF:
            break
        words = re.findall(r"0x([0-9a-f]{16})", mon.cmd(f"x /2gx {fp:#x}").split(":", 1)[-1])
        if len(words) < 2:
            break
        caller_fp, ret = int(words[0], 16), int(words[1], 16)
        if ret == 0:
            break
        st.append(ret)
        if caller_fp <= fp:
            break
        fp = caller_fp
    mon.cmd("cont")
    return st


def report_stacks(stacks, elf, secs):
    """Resolves the sampled addresses and prints the inclusive and SHA-256 tables."""
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


def short(f):
    f = re.sub(r"<[^<>]*>", "", f)
    f = re.sub(r"<[^<>]*>", "", f)
    return f[:140]

if __name__ == "__main__":
    main()
