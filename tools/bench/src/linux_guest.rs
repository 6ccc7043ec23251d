//! The Linux baseline of `bench net`: a pair of stock Debian Linux guests (the
//! `linux-image-amd64` kernel and a `busybox-static` initramfs that this module builds)
//! on a host switch of their own, with the same NIC model (virtio-net, modern), the same
//! netdev kind (`dgram` on the switch's Unix sockets), memory and core count as the XDV
//! pair. Guest 2 runs a discarding TCP server (`nc -l`); guest 1 measures back-to-back
//! ICMP round trips (`ping -A`, the next echo as soon as the reply arrives) and the time
//! to send [`Plan::bulk_bytes`] with `nc`, and prints one machine-parsable line per
//! sample on its serial console (`console=ttyS0`):
//!
//! - `linux-rtt-ms <ms>`: one echo reply's round trip, as busybox `ping` reports it;
//! - `linux-bulk bytes=<n> ns=<t>`: one transfer guest 1 → guest 2, timed from before
//!   `nc` starts to after it exits by the guest's monotonic clock (`now at … nsecs` of
//!   `/proc/timer_list`, read with shell builtins so no fork falls inside). `nc`
//!   exits when the server, having read everything, closes: every byte was delivered.
//!   Busybox `nc` moves 1 KiB per `read`/`write` on both sides, so it measures the
//!   guest's system calls as much as its network path; hence also
//! - `linux-http bytes=<n> ns=<t>`: the same bytes guest 2 → guest 1 from
//!   busybox `httpd` (a file written to the socket with large writes) to `wget -O
//!   /dev/null` (64 KiB reads), timed the same way around `wget`. `bench net` compares
//!   XDV with the faster of the two, Linux's best here.
//!
//! What differs from the XDV pair: no management NIC (the guests need none), and the
//! Linux kernel drives its NIC with its own stack and interrupt policy, which is the
//! point of the comparison. Nothing here is used by CI except the cpio writer's and
//! the module resolver's unit tests (the kernel package is large).

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use xdv::qemu::{Config, NicModel, Vm};
use xdv::switch::{Faults, SwitchConfig};

/// The Debian packages the baseline needs.
const PACKAGES: [&str; 2] = ["linux-image-amd64", "busybox-static"];
const BUSYBOX: &str = "/bin/busybox";
/// Modules the guest needs for a modern virtio-net NIC, when not built in; their
/// dependencies come from `modules.dep`.
const ROOT_MODULES: [&str; 2] = ["virtio_pci", "virtio_net"];
/// The discarding server's TCP port.
const BULK_PORT: u16 = 5001;
/// Boot and each phase of the client's run (TCG on a shared host is slow).
const T: Duration = Duration::from_secs(300);

/// The `/init` of both guests (busybox `sh`). Its parameters come from the kernel
/// command line (`xdv.role=`, `xdv.ip=`, `xdv.peer=`, `xdv.pings=`, `xdv.bytes=`,
/// `xdv.runs=`), which the kernel leaves alone because they contain a dot. Each round
/// sends once with `nc` and once over HTTP (module doc).
const INIT: &str = r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do
    insmod /lib/modules/$m || echo "linux-guest: error: insmod $m failed"
done
for p in $(cat /proc/cmdline); do
    case "$p" in xdv.*=*) k=${p%%=*}; eval "${k#xdv.}=\"${p#*=}\"";; esac
done
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do usleep 100000; n=$((n+1)); done
ip link set lo up
ip addr add "$ip" dev eth0 && ip link set eth0 up || echo "linux-guest: error: no eth0"
if [ "$role" = server ]; then
    mkfifo /hold
    (while true; do nc -l -p PORT 0<>/hold >/dev/null; done) &
    mkdir /www && head -c "$bytes" /dev/zero >/www/bulk && httpd -p 80 -h /www
    echo "linux-guest: ready role=server ip=$ip"
    while true; do sleep 3600; done
fi
# The monotonic clock in ns, by shell builtins only (no fork inside the timing).
now() { { read _a; read _b; read _c; } </proc/timer_list; NOW=${_c#now at }; NOW=${NOW% nsecs}; }
[ -r /proc/timer_list ] || echo "linux-guest: error: no /proc/timer_list"
echo "linux-guest: ready role=client ip=$ip peer=$peer"
n=0
until ping -c 1 -W 1 "$peer" >/dev/null; do
    n=$((n+1)); [ $n -ge 30 ] && echo "linux-guest: error: $peer unreachable" && break
done
ping -c 3 "$peer" >/dev/null
ping -A -c "$pings" "$peer" >/tmp/ping.txt
sed -n 's/.*time=\([0-9.]*\) ms.*/linux-rtt-ms \1/p' /tmp/ping.txt
head -c "$bytes" /dev/zero >/tmp/bulk
i=0
while [ $i -lt "$runs" ]; do
    i=$((i+1)); try=0
    while true; do
        now; t0=$NOW
        if nc "$peer" PORT </tmp/bulk >/dev/null; then
            now; echo "linux-bulk bytes=$bytes ns=$((NOW-t0))"
            break
        fi
        try=$((try+1)); [ $try -ge 20 ] && echo "linux-guest: error: nc failed" && break
        usleep 200000
    done
    now; t0=$NOW
    if wget -q -O /dev/null "http://$peer/bulk"; then
        now; echo "linux-http bytes=$bytes ns=$((NOW-t0))"
    else
        echo "linux-guest: error: wget failed"
    fi
done
echo "linux-guest: done"
poweroff -f
"#;

/// What the client guest measures.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub pings: usize,
    pub bulk_bytes: u64,
    pub bulk_runs: usize,
}

/// The client guest's samples.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Round trips in ms, sorted.
    pub rtts_ms: Vec<f64>,
    /// One throughput per `nc` transfer, MiB/s, in run order.
    pub bulk_mibps: Vec<f64>,
    /// One throughput per `httpd` → `wget` transfer, MiB/s, in run order.
    pub http_mibps: Vec<f64>,
    /// `vmlinuz-<version>` booted.
    pub kernel: String,
}

/// Boots the pair and measures; `dir` holds the switch sockets and the initramfs.
/// Memory and cores are [`Config::kernel_at`]'s defaults, as for the XDV nodes.
pub fn measure(dir: &Path, plan: Plan) -> Result<Measured> {
    let (kernel, version) = ensure_installed()?;
    let initrd = dir.join("linux-initramfs.cpio");
    std::fs::write(&initrd, initramfs(&version)?)
        .with_context(|| format!("writing {}", initrd.display()))?;
    let _switch = xdv::switch::spawn(SwitchConfig {
        dir: dir.to_path_buf(),
        ports: 2,
        seed: 1,
        faults: Faults::default(),
    })?;
    let guest = |id: u16, params: String| -> Result<Vm> {
        let mut cfg = Config::kernel_at(
            kernel.clone(),
            &format!("console=ttyS0 quiet panic=1 xdv.ip=10.0.0.{id}/24 {params}"),
        )
        .with_nics_of(NicModel::Virtio, dir, id, None);
        cfg.extra
            .extend(["-initrd".into(), initrd.display().to_string()]);
        Vm::spawn(&cfg)
    };
    let mut server = guest(2, format!("xdv.role=server xdv.bytes={}", plan.bulk_bytes))?;
    server.wait_for("linux-guest: ready", T)?;
    if let Some(l) = server
        .output()
        .lines()
        .find(|l| l.contains("linux-guest: error"))
    {
        return Err(server.error(&format!("Linux server guest: {l}")));
    }
    let mut client = guest(
        1,
        format!(
            "xdv.role=client xdv.peer=10.0.0.2 xdv.pings={} xdv.bytes={} xdv.runs={}",
            plan.pings, plan.bulk_bytes, plan.bulk_runs
        ),
    )?;
    client.wait_for("linux-guest: done", T)?;
    let out = client.output();
    let _ = std::fs::remove_file(&initrd);
    if let Some(l) = out.lines().find(|l| l.contains("linux-guest: error")) {
        return Err(client.error(&format!("Linux client guest: {l}")));
    }
    let m = parse_client(&out, version)?;
    let runs = plan.bulk_runs;
    if m.rtts_ms.len() < plan.pings / 2 || m.bulk_mibps.len() != runs || m.http_mibps.len() != runs
    {
        return Err(client.error(&format!(
            "Linux client guest: {} of {} echo replies, {} and {} of {runs} nc and HTTP transfers",
            m.rtts_ms.len(),
            plan.pings,
            m.bulk_mibps.len(),
            m.http_mibps.len(),
        )));
    }
    let _ = client.wait_exit(Duration::from_secs(30));
    Ok(m)
}

/// Parses the client's result lines (module doc).
fn parse_client(out: &str, version: String) -> Result<Measured> {
    let mut rtts_ms: Vec<f64> = Vec::new();
    let (mut bulk_mibps, mut http_mibps) = (Vec::new(), Vec::new());
    for line in out.lines() {
        if let Some(v) = line.strip_prefix("linux-rtt-ms ") {
            rtts_ms.push(
                v.trim()
                    .parse()
                    .with_context(|| format!("bad line {line:?}"))?,
            );
        } else if let Some(rest) = line.strip_prefix("linux-bulk ") {
            bulk_mibps.push(transfer_mibps(rest)?);
        } else if let Some(rest) = line.strip_prefix("linux-http ") {
            http_mibps.push(transfer_mibps(rest)?);
        }
    }
    rtts_ms.sort_by(f64::total_cmp);
    Ok(Measured {
        rtts_ms,
        bulk_mibps,
        http_mibps,
        kernel: format!("vmlinuz-{version}"),
    })
}

/// MiB/s from `bytes=<n> ns=<t>`.
fn transfer_mibps(fields: &str) -> Result<f64> {
    let field = |k: &str| -> Result<f64> {
        fields
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {k}= in {fields:?}"))
    };
    let ns = field("ns")?;
    if ns <= 0.0 {
        bail!("transfer took no time by the guest's clock: {fields:?}");
    }
    Ok(field("bytes")? / (ns / 1e9) / f64::from(1u32 << 20))
}

/// The newest `/boot/vmlinuz-<version>` with its modules in `/lib/modules/<version>`
/// (Debian's `linux-image-amd64` installs both), or `None`.
fn find_kernel() -> Option<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let version = name.strip_prefix("vmlinuz-")?.to_string();
            Path::new("/lib/modules")
                .join(&version)
                .join("modules.dep")
                .exists()
                .then(|| (Path::new("/boot").join(&name), version))
        })
        .collect();
    found.sort();
    found.pop()
}

/// The kernel and its version; installs [`PACKAGES`] with apt when the kernel or a
/// static busybox is missing (saying so first), as `xdv::prereq` does: only as root
/// and not under `XDV_INSTALL=never`, else the error names the line to run.
fn ensure_installed() -> Result<(PathBuf, String)> {
    if find_kernel().is_none() || static_busybox().is_err() {
        if !xdv::prereq::may_install() {
            bail!(
                "no Debian kernel in /boot or no static /bin/busybox; install them with:\n    {}",
                xdv::prereq::apt_line(&PACKAGES)
            );
        }
        // A fresh machine's package index may be stale: update once and retry.
        if apt(&["install", "-y", "--no-install-recommends"]).is_err() {
            apt(&["update", "-q"])?;
            apt(&["install", "-y", "--no-install-recommends"])?;
        }
    }
    static_busybox()?;
    find_kernel().context(
        "no /boot/vmlinuz-* with /lib/modules/<version>/modules.dep after installing linux-image-amd64",
    )
}

/// `apt-get <args>` (with [`PACKAGES`] after `install`), said first.
fn apt(args: &[&str]) -> Result<()> {
    let mut all = args.to_vec();
    if args.first() == Some(&"install") {
        all.extend(PACKAGES);
    }
    eprintln!(
        "bench net: Linux baseline: running `apt-get {}`",
        all.join(" ")
    );
    let status = Command::new("apt-get")
        .args(&all)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(std::process::Stdio::null())
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("`apt-get {}` failed ({status})", all.join(" "));
    }
    Ok(())
}

/// Checks that [`BUSYBOX`] is a static ELF (no `PT_INTERP` program header): the
/// initramfs has no C library.
fn static_busybox() -> Result<Vec<u8>> {
    let elf = std::fs::read(BUSYBOX).with_context(|| format!("reading {BUSYBOX}"))?;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let ph = || -> Option<bool> {
        if elf.get(..5)? != b"\x7fELF\x02" {
            return None;
        }
        let phoff =
            usize::try_from(u64::from_le_bytes(elf.get(0x20..0x28)?.try_into().ok()?)).ok()?;
        let (size, count) = (usize::from(u16_at(0x36)?), usize::from(u16_at(0x38)?));
        let mut interp = false;
        for i in 0..count {
            let at = phoff.checked_add(i.checked_mul(size)?)?;
            interp |= u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?) == 3;
        }
        Some(interp)
    };
    match ph() {
        None => bail!("{BUSYBOX} is not a 64-bit ELF"),
        Some(true) => bail!("{BUSYBOX} is dynamically linked: install busybox-static"),
        Some(false) => Ok(elf),
    }
}

/// The initramfs (newc cpio, uncompressed) for kernel `version`: busybox with a link
/// per applet in `/bin`, the virtio modules the kernel does not build in (load order
/// in `/modules.order`), `/dev/console` and [`INIT`].
fn initramfs(version: &str) -> Result<Vec<u8>> {
    let busybox = static_busybox()?;
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .context("busybox --list")?;
    let moddir = Path::new("/lib/modules").join(version);
    let read = |f: &str| std::fs::read_to_string(moddir.join(f)).unwrap_or_default();
    let modules = module_load_order(
        &read("modules.dep"),
        &read("modules.builtin"),
        &ROOT_MODULES,
    )?;
    let mut c = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"] {
        c.dir(d);
    }
    c.char_dev("dev/console", 0o600, 5, 1);
    c.file("bin/busybox", 0o755, &busybox);
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" && !applet.contains('/') {
            c.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    let mut order = String::new();
    for m in &modules {
        let name = Path::new(m)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(m);
        let plain = name.split(".ko").next().unwrap_or(name).to_string() + ".ko";
        c.file(
            &format!("lib/modules/{plain}"),
            0o644,
            &module_bytes(&moddir.join(m))?,
        );
        order.push_str(&plain);
        order.push('\n');
    }
    c.file("modules.order", 0o644, order.as_bytes());
    c.file(
        "init",
        0o755,
        INIT.replace("PORT", &BULK_PORT.to_string()).as_bytes(),
    );
    Ok(c.finish())
}

/// A module file's bytes, decompressed on the host when it is `.ko.xz`, `.ko.zst`
/// or `.ko.gz` (busybox `insmod` takes plain ELF here).
fn module_bytes(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("ko") => {
            return std::fs::read(path).with_context(|| format!("reading {}", path.display()));
        }
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => bail!("{}: not a kernel module", path.display()),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running `{tool} -dc` (install {tool})"))?;
    if !out.status.success() {
        bail!("`{tool} -dc {}` failed", path.display());
    }
    Ok(out.stdout)
}

/// A module's name from its path in `modules.dep`: the file name without `.ko*`,
/// `-` read as `_` (as the kernel does).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// The modules to load, dependencies first, for `roots` given `modules.dep` and
/// `modules.builtin` text: built-in roots are skipped; a root that is neither is an
/// error. Deterministic: depth-first in the order the files list them.
fn module_load_order(dep: &str, builtin: &str, roots: &[&str]) -> Result<Vec<String>> {
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let needs = rest.split_whitespace().map(String::from).collect();
        deps.insert(module_name(path), (path.to_string(), needs));
    }
    let built_in: Vec<String> = builtin.lines().map(module_name).collect();
    let mut order: Vec<String> = Vec::new();
    fn visit(
        path: &str,
        deps: &BTreeMap<String, (String, Vec<String>)>,
        order: &mut Vec<String>,
        depth: usize,
    ) -> Result<()> {
        if depth > 64 {
            bail!("modules.dep: dependency chain through {path} deeper than 64");
        }
        if order.iter().any(|p| p == path) {
            return Ok(());
        }
        if let Some((_, needs)) = deps.get(&module_name(path)) {
            for n in needs {
                visit(n, deps, order, depth + 1)?;
            }
        }
        order.push(path.to_string());
        Ok(())
    }
    for root in roots {
        if built_in.iter().any(|b| b == root) {
            continue;
        }
        match deps.get(*root) {
            Some((path, _)) => visit(path, &deps, &mut order, 0)?,
            None => bail!("module {root} is neither in modules.dep nor built in"),
        }
    }
    Ok(order)
}

/// A newc ("070701") cpio archive writer: what the kernel unpacks as an initramfs.
#[derive(Default)]
struct Cpio {
    buf: Vec<u8>,
    next_ino: u32,
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const TRAILER: &str = "TRAILER!!!";

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        // Inode numbers distinct per entry (the kernel hard-links entries sharing
        // one); the trailer's is 0.
        let ino = if name == TRAILER {
            0
        } else {
            self.next_ino += 1;
            self.next_ino
        };
        let size = u32::try_from(data.len()).expect("cpio newc entries are below 4 GiB");
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
        // namesize check; mtime 0 keeps the archive the same on every build.
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, S_IFDIR | 0o755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, S_IFREG | perm, (0, 0), data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, (0, 0), target.as_bytes());
    }

    fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | perm, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry(TRAILER, 0, (0, 0), &[]);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed newc entry.
    struct Entry {
        ino: u32,
        name: String,
        mode: u32,
        rdev: (u32, u32),
        data: Vec<u8>,
    }

    /// An independent reader of the newc format, stopping at the trailer.
    fn parse(mut b: &[u8]) -> Vec<Entry> {
        let hex = |s: &[u8]| u32::from_str_radix(std::str::from_utf8(s).unwrap(), 16).unwrap();
        let pad = |n: usize| n.div_ceil(4) * 4;
        let mut out = Vec::new();
        loop {
            assert_eq!(&b[..6], b"070701", "magic");
            let f = |i: usize| hex(&b[6 + 8 * i..14 + 8 * i]);
            let (mode, size, namesize) = (f(1), f(6) as usize, f(11) as usize);
            assert_eq!(f(12), 0, "check field is 0 in newc");
            let name = std::str::from_utf8(&b[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(b[110 + namesize - 1], 0, "name is NUL-terminated");
            let data_at = pad(110 + namesize);
            let data = b[data_at..data_at + size].to_vec();
            let e = Entry {
                ino: f(0),
                name,
                mode,
                rdev: (f(9), f(10)),
                data,
            };
            b = &b[pad(data_at + size)..];
            let end = e.name == TRAILER;
            out.push(e);
            if end {
                assert!(b.is_empty(), "nothing after the trailer");
                return out;
            }
        }
    }

    #[test]
    fn cpio_entries_parse_back() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("bin/busybox", 0o755, b"\x7fELF12345");
        c.symlink("bin/sh", "busybox");
        c.char_dev("dev/console", 0o600, 5, 1);
        c.file("init", 0o755, b"");
        let archive = c.finish();
        assert_eq!(archive.len() % 4, 0);
        let e = parse(&archive);
        let names: Vec<&str> = e.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev/console",
                "init",
                TRAILER
            ]
        );
        assert_eq!(e[0].mode, 0o040_755);
        assert_eq!(
            (e[1].mode, e[1].data.as_slice()),
            (0o100_755, &b"\x7fELF12345"[..])
        );
        assert_eq!(
            (e[2].mode, e[2].data.as_slice()),
            (0o120_777, &b"busybox"[..])
        );
        assert_eq!((e[3].mode, e[3].rdev), (0o020_600, (5, 1)));
        assert!(e[4].data.is_empty());
        assert_eq!((e[5].mode, e[5].ino), (0, 0));
        // Distinct inode numbers: the kernel would hard-link entries that share one.
        let inos: std::collections::BTreeSet<u32> = e[..5].iter().map(|x| x.ino).collect();
        assert_eq!(inos.len(), 5);
    }

    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
";

    #[test]
    fn modules_load_dependencies_first_once() {
        let order = module_load_order(DEP, "", &ROOT_MODULES).unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_pci.ko",
                "kernel/net/core/failover.ko",
                "kernel/drivers/net/net_failover.ko",
                "kernel/drivers/net/virtio_net.ko.xz",
            ]
        );
    }

    #[test]
    fn built_in_modules_are_skipped_and_unknown_ones_refused() {
        let builtin = "kernel/drivers/virtio/virtio_pci.ko\n";
        let order = module_load_order(DEP, builtin, &["virtio_pci"]).unwrap();
        assert!(order.is_empty());
        let err = module_load_order(DEP, builtin, &["e1000e"]).unwrap_err();
        assert!(err.to_string().contains("e1000e"), "{err}");
    }

    #[test]
    fn client_lines_parse_to_samples() {
        let out = "noise\nlinux-rtt-ms 0.700\nlinux-rtt-ms 0.500\n\
                   linux-bulk bytes=8388608 ns=4000000000\n\
                   linux-http bytes=8388608 ns=1000000000\nlinux-guest: done\n";
        let m = parse_client(out, "6.1".into()).unwrap();
        assert_eq!(m.rtts_ms, [0.5, 0.7]);
        assert_eq!(m.bulk_mibps, [2.0]);
        assert_eq!(m.http_mibps, [8.0]);
        assert!(parse_client("linux-http bytes=1\n", "x".into()).is_err());
        assert!(parse_client("linux-bulk bytes=1 ns=0\n", "x".into()).is_err());
    }
}
