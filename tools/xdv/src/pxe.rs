//! PXE netboot trees: a TFTP root from which BIOS (`i386-pc`) and UEFI (`x86_64-efi`)
//! machines boot GRUB over the network, and GRUB boots each machine's XDV kernel with
//! that machine's command line and provisioning module, chosen by the MAC of the NIC
//! it booted from. `cargo xdv pxe` writes one for real machines (docs/pxe.md);
//! `cargo xdv up --boot pxe` writes one into the cluster directory and boots QEMU
//! nodes from it over QEMU's user network (its built-in TFTP server).
//!
//! Layout of a tree (`DIR`):
//! - `boot/grub/i386-pc/core.0`, `boot/grub/x86_64-efi/core.efi`: GRUB's network
//!   images and modules (`grub-mknetdir`); the DHCP server names one as the boot file
//! - `boot/grub/grub.cfg`: the one configuration both load; it enables the serial
//!   console, then sources `xdv/mac-<MAC>.cfg` for the MAC GRUB booted from
//!   (`$net_default_mac`, lower-case, colon-separated); with no such file it prints
//!   `xdv: pxe: unknown MAC ...` and boots the kernel in discovery mode
//!   (`discover=<MAC>/<platform>`, no module): it joins nothing and reports itself
//!   to the cluster as discovered (docs/pxe.md)
//! - `xdv/kernel.elf` the kernel, `xdv/node<N>.prov` each node's provisioning module,
//!   `xdv/mac-<MAC>.cfg` each node's `multiboot2`/`module2` lines
//!
//! Per-MAC files named by GRUB itself (`grub.cfg-01-<mac>`) are looked up only by
//! some GRUB builds and setups; sourcing by `$net_default_mac` works with the PXE
//! (BIOS) and EFI network drivers alike.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Firmware of a PXE-booting machine.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// Legacy BIOS: the NIC's PXE option ROM loads GRUB's `core.0`.
    #[default]
    Bios,
    /// UEFI: the firmware's network stack loads GRUB's `core.efi` (OVMF in QEMU).
    Uefi,
}

impl Firmware {
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
        }
    }
    /// GRUB's platform directory under `/usr/lib/grub`.
    pub fn grub_platform(self) -> &'static str {
        match self {
            Firmware::Bios => "i386-pc",
            Firmware::Uefi => "x86_64-efi",
        }
    }
    /// The boot file (path in the TFTP root) the DHCP server hands out.
    pub fn bootfile(self) -> &'static str {
        match self {
            Firmware::Bios => "boot/grub/i386-pc/core.0",
            Firmware::Uefi => "boot/grub/x86_64-efi/core.efi",
        }
    }
    /// Are GRUB's modules for this firmware installed on the host?
    pub fn grub_installed(self) -> bool {
        Path::new("/usr/lib/grub")
            .join(self.grub_platform())
            .is_dir()
    }
}

/// OVMF (Debian `ovmf`): firmware code (read-only) and the variable store template.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS.fd";

/// How a QEMU node boots over the network (kept in the cluster state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PxeBoot {
    /// The TFTP root (QEMU's user network serves it).
    pub tftp: PathBuf,
    pub firmware: Firmware,
}

impl PxeBoot {
    /// The user-network options that serve the tree (`tftp=`, `bootfile=`), to append
    /// to the management NIC's `-netdev user,...`.
    pub fn netdev_options(&self) -> String {
        format!(
            "tftp={},bootfile={}",
            self.tftp.display(),
            self.firmware.bootfile()
        )
    }

    /// Firmware arguments: nothing for BIOS (SeaBIOS boots the NIC with `bootindex`);
    /// for UEFI, OVMF as flash with a per-node copy of its variable store at `vars`.
    pub fn firmware_args(&self, vars: &Path) -> Result<Vec<String>> {
        match self.firmware {
            Firmware::Bios => Ok(Vec::new()),
            Firmware::Uefi => {
                crate::prereq::ensure(&[crate::prereq::Need::Uefi])?;
                if !vars.exists() {
                    std::fs::copy(OVMF_VARS, vars)
                        .with_context(|| format!("copying {OVMF_VARS} to {}", vars.display()))?;
                }
                Ok(vec![
                    "-drive".into(),
                    format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
                    "-drive".into(),
                    format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
                ])
            }
        }
    }
}

/// One machine of a tree.
#[derive(Clone, Debug)]
pub struct PxeNode {
    pub id: u32,
    /// The MAC of the NIC the machine boots from (any case, `:` or `-` separated).
    pub mac: String,
    /// Kernel command line.
    pub cmdline: String,
    /// Provisioning module bytes (keys, peers), if the node has one.
    pub module: Option<Vec<u8>>,
}

/// The MAC as GRUB spells `$net_default_mac`: lower case, colon-separated. Refuses
/// anything but six hex octets.
pub fn grub_mac(mac: &str) -> Result<String> {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    if parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        bail!("bad MAC `{mac}` (want six hex octets, e.g. 52:54:00:00:01:01)");
    }
    Ok(parts.join(":").to_ascii_lowercase())
}

/// Characters GRUB's parser would take as syntax in an unquoted command line.
fn check_cmdline(cmdline: &str) -> Result<()> {
    if let Some(c) = cmdline
        .chars()
        .find(|c| matches!(c, ';' | '$' | '\'' | '"' | '\\' | '{' | '}' | '\n' | '#'))
    {
        bail!("kernel command line `{cmdline}` contains `{c}`, which GRUB would interpret");
    }
    Ok(())
}

/// The top-level `boot/grub/grub.cfg`.
pub fn top_config() -> String {
    "# Written by `cargo xdv pxe`: picks this machine's XDV node by the MAC it booted from.\n\
     serial --unit=0 --speed=115200\n\
     terminal_input serial console\n\
     terminal_output serial console\n\
     set timeout=0\n\
     echo \"xdv: pxe: GRUB booted from MAC ${net_default_mac}\"\n\
     source ($root)/xdv/mac-${net_default_mac}.cfg\n\
     echo \"xdv: pxe: unknown MAC ${net_default_mac}: no xdv/mac-${net_default_mac}.cfg in the TFTP root; this machine is not a provisioned XDV node and does not join. Booting in discovery mode: it reports itself to the cluster (`cargo xdv nodes --discovered`); admit it with `cargo xdv join --mac ${net_default_mac}`.\"\n\
     multiboot2 ($root)/xdv/kernel.elf discover=${net_default_mac}/${grub_platform}\n\
     boot\n\
     echo \"xdv: pxe: GRUB could not boot the discovery kernel; powering off\"\n\
     sleep 2\n\
     halt\n"
        .to_string()
}

/// A node's `xdv/mac-<MAC>.cfg`.
pub fn node_config(node: &PxeNode) -> Result<String> {
    check_cmdline(&node.cmdline)?;
    let mut s = String::new();
    writeln!(s, "# XDV node {} (MAC {})", node.id, grub_mac(&node.mac)?)?;
    writeln!(s, "echo \"xdv: pxe: booting node {}\"", node.id)?;
    writeln!(
        s,
        "multiboot2 ($root)/xdv/kernel.elf {}",
        node.cmdline.trim()
    )?;
    if node.module.is_some() {
        writeln!(s, "module2 ($root)/xdv/node{}.prov", node.id)?;
    }
    writeln!(s, "boot")?;
    writeln!(
        s,
        "echo \"xdv: pxe: node {}: GRUB could not boot the kernel; powering off\"",
        node.id
    )?;
    writeln!(s, "sleep 2\nhalt")?;
    Ok(s)
}

/// What [`write_tree`] wrote.
#[derive(Clone, Debug)]
pub struct Tree {
    pub dir: PathBuf,
    /// Firmwares the tree boots (UEFI only when `grub-efi-amd64-bin` is installed).
    pub firmwares: Vec<Firmware>,
    pub nodes: Vec<(u32, String)>,
}

/// Writes a netboot tree for `nodes` into `dir` (created; the files it writes are
/// replaced), booting `kernel`. UEFI images are made when `uefi` and GRUB's
/// `x86_64-efi` modules are installed (see [`Tree::firmwares`]).
pub fn write_tree(dir: &Path, kernel: &Path, nodes: &[PxeNode], uefi: bool) -> Result<Tree> {
    crate::prereq::ensure(&[crate::prereq::Need::Grub])?;
    let mut macs = std::collections::BTreeSet::new();
    for n in nodes {
        if !macs.insert(grub_mac(&n.mac)?) {
            bail!("MAC {} is given to two nodes", n.mac);
        }
    }
    std::fs::create_dir_all(dir.join("xdv"))?;
    let mut firmwares = vec![Firmware::Bios];
    if uefi && Firmware::Uefi.grub_installed() {
        firmwares.push(Firmware::Uefi);
    }
    for fw in &firmwares {
        mknetdir(dir, *fw)?;
    }
    std::fs::write(dir.join("boot/grub/grub.cfg"), top_config())?;
    std::fs::copy(kernel, dir.join("xdv/kernel.elf"))
        .with_context(|| format!("copying the kernel {}", kernel.display()))?;
    let mut written = Vec::new();
    for n in nodes {
        let mac = grub_mac(&n.mac)?;
        if let Some(m) = &n.module {
            std::fs::write(dir.join(format!("xdv/node{}.prov", n.id)), m)?;
        }
        std::fs::write(dir.join(format!("xdv/mac-{mac}.cfg")), node_config(n)?)?;
        written.push((n.id, mac));
    }
    Ok(Tree {
        dir: dir.to_path_buf(),
        firmwares,
        nodes: written,
    })
}

/// Adds one machine to an existing tree (`cargo xdv join` on a PXE-booted cluster):
/// its provisioning module and `xdv/mac-<MAC>.cfg`. Refuses a directory that is not a
/// tree [`write_tree`] wrote, and a MAC or node id the tree already boots, so a
/// running member's entry is never overwritten. Returns the path of the MAC's file.
pub fn add_node(dir: &Path, node: &PxeNode) -> Result<PathBuf> {
    for need in ["boot/grub/grub.cfg", "xdv/kernel.elf"] {
        if !dir.join(need).is_file() {
            bail!(
                "{} is not a netboot tree (no {need}); write one with `cargo xdv pxe` or `cargo xdv up --boot pxe`",
                dir.display()
            );
        }
    }
    let mac = grub_mac(&node.mac)?;
    let cfg = dir.join(format!("xdv/mac-{mac}.cfg"));
    if cfg.exists() {
        bail!(
            "MAC {mac} already has an entry in the tree ({})",
            cfg.display()
        );
    }
    let prov = dir.join(format!("xdv/node{}.prov", node.id));
    if prov.exists() {
        bail!(
            "node {} already has a provisioning module in the tree ({})",
            node.id,
            prov.display()
        );
    }
    let text = node_config(node)?;
    if let Some(m) = &node.module {
        std::fs::write(&prov, m)?;
    }
    std::fs::write(&cfg, text)?;
    Ok(cfg)
}

/// Takes node `id` (booting from `mac`) out of a tree: its `xdv/mac-<MAC>.cfg` and
/// provisioning module (`cargo xdv remove`, or a `join` the cluster refused). The
/// machine then boots as an unknown MAC. Missing files are not an error.
pub fn remove_node(dir: &Path, id: u32, mac: &str) -> Result<()> {
    let mac = grub_mac(mac)?;
    for f in [format!("xdv/mac-{mac}.cfg"), format!("xdv/node{id}.prov")] {
        match std::fs::remove_file(dir.join(&f)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {f} from {}", dir.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `grub-mknetdir` for one platform.
fn mknetdir(dir: &Path, fw: Firmware) -> Result<()> {
    let modules = Path::new("/usr/lib/grub").join(fw.grub_platform());
    let out = Command::new("grub-mknetdir")
        .arg(format!("--net-directory={}", dir.display()))
        .arg("--subdir=boot/grub")
        .arg("-d")
        .arg(&modules)
        .stdin(Stdio::null())
        .output()
        .context("running grub-mknetdir (Debian grub-common)")?;
    if !out.status.success() {
        bail!(
            "grub-mknetdir for {} failed:\n{}",
            fw.grub_platform(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let image = dir.join(fw.bootfile());
    if !image.is_file() {
        bail!(
            "grub-mknetdir wrote no {} (is {} complete?)",
            image.display(),
            modules.display()
        );
    }
    Ok(())
}

/// A dnsmasq configuration serving `tree` on `interface`. Without `proxy`, dnsmasq
/// is the network's DHCP server (`range` like `192.168.50.100,192.168.50.200`) and
/// gives each node a fixed address; with `proxy`, an existing DHCP server keeps
/// handing out addresses and dnsmasq only answers PXE requests (`range` is the
/// network's address, e.g. `192.168.50.0`).
pub fn dnsmasq_config(tree: &Tree, interface: &str, range: &str, proxy: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by `cargo xdv pxe --dnsmasq` ({}). Run: dnsmasq --conf-file=THIS --no-daemon\n\
         # See docs/pxe.md.\n\
         port=0\n\
         interface={interface}\n\
         bind-interfaces\n\
         log-dhcp\n\
         enable-tftp\n\
         tftp-root={}",
        if proxy { "proxy-DHCP" } else { "DHCP + TFTP" },
        tree.dir.display()
    );
    let uefi = tree.firmwares.contains(&Firmware::Uefi);
    if proxy {
        let _ = writeln!(s, "dhcp-range={range},proxy");
        // dnsmasq appends `.0` to the BIOS (x86PC) boot file itself.
        let _ = writeln!(
            s,
            "pxe-service=x86PC,\"XDV (BIOS)\",{}",
            Firmware::Bios.bootfile().trim_end_matches(".0")
        );
        if uefi {
            let _ = writeln!(
                s,
                "pxe-service=X86-64_EFI,\"XDV (UEFI)\",{}",
                Firmware::Uefi.bootfile()
            );
        }
    } else {
        let _ = writeln!(s, "dhcp-range={range},12h");
        let _ = writeln!(s, "dhcp-match=set:efi64,option:client-arch,7");
        let _ = writeln!(s, "dhcp-match=set:efi64,option:client-arch,9");
        let _ = writeln!(s, "dhcp-boot=tag:!efi64,{}", Firmware::Bios.bootfile());
        if uefi {
            let _ = writeln!(s, "dhcp-boot=tag:efi64,{}", Firmware::Uefi.bootfile());
        }
        for (id, mac) in &tree.nodes {
            let _ = writeln!(s, "dhcp-host={mac},xdv-node{id}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_normalised_and_bad_ones_refused() {
        assert_eq!(grub_mac("52-54-00-00-01-0A").unwrap(), "52:54:00:00:01:0a");
        assert!(grub_mac("52:54:00:00:01").is_err());
        assert!(grub_mac("52:54:00:00:01:zz").is_err());
        assert!(grub_mac("52:54:00:00:01:001").is_err());
    }

    #[test]
    fn node_config_boots_the_kernel_with_its_line_and_module() {
        let n = PxeNode {
            id: 2,
            mac: "52:54:00:00:01:02".into(),
            cmdline: "node=2 ip=10.0.0.2/24".into(),
            module: Some(vec![1, 2, 3]),
        };
        let c = node_config(&n).unwrap();
        assert!(c.contains("multiboot2 ($root)/xdv/kernel.elf node=2 ip=10.0.0.2/24\n"));
        assert!(c.contains("module2 ($root)/xdv/node2.prov\n"));
        let bad = PxeNode {
            cmdline: "node=2; reboot".into(),
            ..n
        };
        assert!(node_config(&bad).is_err(), "GRUB syntax in a command line");
    }

    #[test]
    fn a_node_added_to_a_tree_gets_its_entry_and_module_and_nothing_is_overwritten() {
        let dir = std::env::temp_dir().join(format!("xdv-pxe-add-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let n = PxeNode {
            id: 4,
            mac: "52:54:00:00:01:04".into(),
            cmdline: "node=4 ip=10.0.0.4/24 genesis=1,2,3".into(),
            module: Some(vec![9, 9]),
        };
        let e = add_node(&dir, &n).unwrap_err().to_string();
        assert!(e.contains("is not a netboot tree"), "{e}");
        std::fs::create_dir_all(dir.join("boot/grub")).unwrap();
        std::fs::create_dir_all(dir.join("xdv")).unwrap();
        std::fs::write(dir.join("boot/grub/grub.cfg"), top_config()).unwrap();
        std::fs::write(dir.join("xdv/kernel.elf"), b"elf").unwrap();
        let cfg = add_node(&dir, &n).unwrap();
        assert_eq!(cfg, dir.join("xdv/mac-52:54:00:00:01:04.cfg"));
        let text = std::fs::read_to_string(&cfg).unwrap();
        assert!(text.contains("kernel.elf node=4 ip=10.0.0.4/24 genesis=1,2,3\n"));
        assert!(text.contains("module2 ($root)/xdv/node4.prov\n"));
        assert_eq!(std::fs::read(dir.join("xdv/node4.prov")).unwrap(), [9, 9]);
        let e = add_node(&dir, &n).unwrap_err().to_string();
        assert!(e.contains("already has an entry"), "{e}");
        let other_mac = PxeNode {
            mac: "52:54:00:00:01:05".into(),
            ..n
        };
        let e = add_node(&dir, &other_mac).unwrap_err().to_string();
        assert!(
            e.contains("node 4 already has a provisioning module"),
            "{e}"
        );
        remove_node(&dir, 4, "52:54:00:00:01:04").unwrap();
        assert!(!cfg.exists() && !dir.join("xdv/node4.prov").exists());
        remove_node(&dir, 4, "52:54:00:00:01:04").unwrap();
        add_node(&dir, &other_mac).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_macs_boot_discovery_mode_with_a_message() {
        let c = top_config();
        let source = c
            .find("source ($root)/xdv/mac-${net_default_mac}.cfg")
            .unwrap();
        let unknown = c.find("xdv: pxe: unknown MAC").unwrap();
        let discover = c
            .find("multiboot2 ($root)/xdv/kernel.elf discover=${net_default_mac}/${grub_platform}\nboot\n")
            .unwrap();
        assert!(source < unknown && unknown < discover);
        // No provisioning module for an unknown MAC; power off if GRUB cannot boot.
        assert!(!c.contains("module2"));
        assert!(c.trim_end().ends_with("halt"));
    }

    #[test]
    fn dnsmasq_configs_name_the_boot_files() {
        let tree = Tree {
            dir: PathBuf::from("/srv/xdv"),
            firmwares: vec![Firmware::Bios, Firmware::Uefi],
            nodes: vec![(1, "52:54:00:00:01:01".into())],
        };
        let full = dnsmasq_config(&tree, "eth1", "192.168.50.100,192.168.50.200", false);
        assert!(full.contains("tftp-root=/srv/xdv\n"));
        assert!(full.contains("dhcp-boot=tag:!efi64,boot/grub/i386-pc/core.0\n"));
        assert!(full.contains("dhcp-boot=tag:efi64,boot/grub/x86_64-efi/core.efi\n"));
        assert!(full.contains("dhcp-host=52:54:00:00:01:01,xdv-node1\n"));
        let proxy = dnsmasq_config(&tree, "eth1", "192.168.50.0", true);
        assert!(proxy.contains("dhcp-range=192.168.50.0,proxy\n"));
        assert!(proxy.contains("pxe-service=x86PC,\"XDV (BIOS)\",boot/grub/i386-pc/core\n"));
        assert!(!proxy.contains("dhcp-host"));
    }
}
