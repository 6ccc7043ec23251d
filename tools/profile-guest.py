#!/usr/bin/env python3
"""Samples a running XDV guest's instruction pointers through QEMU's monitor.

Start QEMU through the xdv tools with XDV_QEMU_MONITOR=DIR (each VM gets DIR/vmN.sock),
then: tools/profile-guest.py DIR/vm1.sock KERNEL_ELF [seconds] [hz] [cpu]

Every 1/hz s it asks `info registers -a`, takes RIP of the chosen vCPU (0: the boot CPU,
which runs the node's loop), and at the end resolves the addresses with addr2line and
prints the hottest functions: innermost (with inlining) and outermost (the real frame).
Under TCG a vCPU's RIP is exact at translation-block boundaries only, so a sample is the
start of the block being run: good for where time goes, not for single instructions.
"""
import collections, re, socket, subprocess, sys, time

def main():
    sock_path, elf = sys.argv[1], sys.argv[2]
    secs = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    hz = float(sys.argv[4]) if len(sys.argv) > 4 else 100.0
    cpu = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    s.settimeout(2.0)
    buf = b""
    def until_prompt():
        nonlocal buf
        while b"(qemu) " not in buf:
            buf += s.recv(65536)
        out, _, buf = buf.partition(b"(qemu) ")
        return out.decode(errors="replace")
    until_prompt()
    rips = collections.Counter()
    end = time.time() + secs
    n = 0
    while time.time() < end:
        s.sendall(b"info registers -a\n")
        out = until_prompt()
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

def short(f):
    f = re.sub(r"<[^<>]*>", "", f)
    f = re.sub(r"<[^<>]*>", "", f)
    return f[:140]

if __name__ == "__main__":
    main()
