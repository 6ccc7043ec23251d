//! A provisioned local cluster inside one process, for the QEMU tests and benchmarks:
//! fresh keys and modules, the switch in this process, N nodes booted with `-initrd`
//! and a management port each, and helpers to wait for a leader or for convergence.
//! (`cargo xdv up` does the same with detached processes for people.)

use crate::mgmt::{self, Keys};
use crate::qemu::{Config, NicModel, Vm, temp_dir};
use crate::switch::{Faults, SwitchConfig, SwitchHandle};
use anyhow::{Result, bail};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xdv_cluster::mgmt::{ClusterView, Principal, Request, SignedRequest, Submit};
use xdv_cluster::{Domain, Work};
use xdv_types::{TaskId, TenantId};

/// Boot and wait limit for one node.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

pub struct Testbed {
    pub dir: PathBuf,
    pub keys: Keys,
    pub ports: Vec<u16>,
    pub vms: Vec<Option<Vm>>,
    pub switch: SwitchHandle,
    /// Extra kernel command-line words for every node.
    pub cmdline: String,
    /// Accelerator sockets attached to a node when it boots (node id → sockets).
    pub accels: std::collections::BTreeMap<usize, Vec<PathBuf>>,
    /// NIC model of every node booted from now on (default virtio-net).
    pub nic: NicModel,
    /// Nodes booted from now on run the kernel with its test hooks
    /// ([`crate::qemu::kernel_image_with_test_hooks`]); default false: the image users run.
    pub test_hooks: bool,
}

/// Ports the tests hand out: below Linux's ephemeral range (32768–60999), so the
/// kernel never gives one of them to an outgoing connection between the check here and
/// QEMU's bind.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// The next port to try in this process; starts at an offset from the process id so
/// test processes that run side by side start apart.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// The first of `n` consecutive TCP ports on 127.0.0.1 that are free now and that no
/// other call in this process has returned (for nodes' management forwards).
pub fn free_ports(n: u16) -> u16 {
    use std::sync::atomic::Ordering;
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let _ = NEXT_PORT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(97) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let off = NEXT_PORT.fetch_add(u32::from(n), Ordering::Relaxed) % span;
        let first = TEST_PORTS.start + off as u16;
        let Some(last) = first.checked_add(n - 1).filter(|l| *l < TEST_PORTS.end) else {
            continue;
        };
        if (first..=last).all(crate::cluster::port_free) {
            return first;
        }
    }
    panic!("no {n} consecutive free ports in {TEST_PORTS:?} on 127.0.0.1");
}

/// A free TCP port on 127.0.0.1 (for a node's management forward).
pub fn free_port() -> u16 {
    free_ports(1)
}

impl Testbed {
    /// Keys, modules, the switch and `nodes` booted nodes (ids 1..=nodes), two tenants.
    pub fn launch(tag: &str, nodes: usize, faults: Faults, seed: u64) -> Result<Testbed> {
        Self::launch_with(tag, nodes, faults, seed, "")
    }

    /// As [`launch`](Self::launch), with extra kernel command-line words.
    pub fn launch_with(
        tag: &str,
        nodes: usize,
        faults: Faults,
        seed: u64,
        cmdline: &str,
    ) -> Result<Testbed> {
        Self::launch_full(tag, nodes, faults, seed, cmdline, NicModel::default())
    }

    /// As [`launch_with`](Self::launch_with), every node with NICs of `nic`.
    pub fn launch_full(
        tag: &str,
        nodes: usize,
        faults: Faults,
        seed: u64,
        cmdline: &str,
        nic: NicModel,
    ) -> Result<Testbed> {
        let mut tb = Self::prepare(tag, nodes, faults, seed, cmdline)?;
        tb.nic = nic;
        for id in 1..=nodes {
            tb.vms[id - 1] = Some(tb.boot(id, &format!("node{id}.prov"))?);
        }
        Ok(tb)
    }

    /// Keys, modules and the switch — with one spare port, `nodes + 1`, for a test
    /// peer ([`crate::fakepeer`]) — and no node booted yet.
    pub fn prepare(
        tag: &str,
        nodes: usize,
        faults: Faults,
        seed: u64,
        cmdline: &str,
    ) -> Result<Testbed> {
        let dir = temp_dir(tag)?;
        let keys = Keys::generate(nodes as u32, 2)?;
        keys.save(&dir)?;
        for id in 1..=nodes as u32 {
            std::fs::write(dir.join(format!("node{id}.prov")), keys.module(id)?)?;
        }
        let switch = crate::switch::spawn(SwitchConfig {
            dir: dir.clone(),
            ports: nodes as u16 + 1,
            seed,
            faults,
        })?;
        let ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
        Ok(Testbed {
            dir,
            keys,
            ports,
            vms: (0..nodes).map(|_| None).collect(),
            switch,
            cmdline: cmdline.to_string(),
            accels: std::collections::BTreeMap::new(),
            nic: NicModel::default(),
            test_hooks: false,
        })
    }

    /// A federation's keys, modules and switch, no node booted yet: `gates` gate
    /// nodes (ids 1..=G), then `clusters` clusters of `nodes` nodes each
    /// ([`crate::mgmt::Federation::layout`]), two tenants provisioned everywhere, the
    /// router's hold-down, degrade confirmation and cooldown × `route_per_mille` / 1000.
    /// `keys.cluster` is the gate group's (tenants sign for the gate);
    /// `keys.for_node(id)` signs for node `id`'s cluster.
    pub fn prepare_federation(
        tag: &str,
        (gates, clusters, nodes): (u32, u32, u32),
        route_per_mille: u32,
        seed: u64,
    ) -> Result<Testbed> {
        let dir = temp_dir(tag)?;
        let keys =
            Keys::generate_federation(gates, clusters, nodes, 2, (500, 1_000, route_per_mille))?;
        keys.save(&dir)?;
        let total = gates + clusters * nodes;
        for id in 1..=total {
            std::fs::write(dir.join(format!("node{id}.prov")), keys.module(id)?)?;
        }
        let switch = crate::switch::spawn(SwitchConfig {
            dir: dir.clone(),
            ports: total as u16,
            seed,
            faults: Faults::default(),
        })?;
        let ports: Vec<u16> = (0..total).map(|_| free_port()).collect();
        Ok(Testbed {
            dir,
            keys,
            ports,
            vms: (0..total).map(|_| None).collect(),
            switch,
            cmdline: String::new(),
            accels: std::collections::BTreeMap::new(),
            nic: NicModel::default(),
            test_hooks: false,
        })
    }

    /// Boots node `id` on its RAM file with the provisioning module file `module`.
    pub fn boot(&self, id: usize, module: &str) -> Result<Vm> {
        // Two CPUs: the boot CPU serves the network and consensus, the AP runs tasks.
        self.boot_smp(id, module, 2)
    }

    /// [`Testbed::boot`] with `smp` CPUs (`smp - 1` run tasks).
    pub fn boot_smp(&self, id: usize, module: &str, smp: u32) -> Result<Vm> {
        let cmdline = format!("node={id} ip=10.0.0.{id}/24 {}", self.cmdline);
        let cfg = if self.test_hooks {
            Config::kernel_with_test_hooks(&cmdline)?
        } else {
            Config::kernel(&cmdline)?
        };
        let mut cfg = cfg
            .smp(smp)
            .ram_file(self.dir.join(format!("node{id}.ram")))
            .with_nics_of(self.nic, &self.dir, id as u16, Some(self.port(id)));
        for sock in self.accels.get(&id).into_iter().flatten() {
            cfg = cfg.with_accel(sock);
        }
        cfg.extra.extend([
            "-initrd".into(),
            self.dir.join(module).display().to_string(),
        ]);
        let mut vm = Vm::spawn(&cfg)?;
        vm.wait_for("xdv> ", BOOT_TIMEOUT)?;
        Ok(vm)
    }

    pub fn port(&self, id: usize) -> u16 {
        self.ports[id - 1]
    }

    /// The RAM files of nodes `ids` as the host's operating commands read them (with
    /// their provisioning modules), for `verify`, `replay`, audit checks.
    pub fn node_images(&self, ids: &[usize]) -> Result<Vec<crate::operate::NodeImage>> {
        ids.iter()
            .map(|id| {
                crate::operate::load_node(
                    &self.dir.join(format!("node{id}.ram")),
                    &crate::operate::image::LoadOptions {
                        prov: Some(self.dir.join(format!("node{id}.prov"))),
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    pub fn view(&self, id: usize) -> Result<ClusterView> {
        mgmt::cluster_view(self.port(id), &self.keys.for_node(id as u32))
    }

    pub fn vm(&mut self, id: usize) -> &mut Vm {
        self.vms[id - 1].as_mut().expect("node is running")
    }

    /// SIGKILLs node `id`.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut vm) = self.vms[id - 1].take() {
            vm.kill();
        }
    }

    /// The last lines of every running node's serial log (for failure messages).
    pub fn logs(&self) -> String {
        self.vms
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Some(vm) => {
                    let out = vm.output();
                    let lines: Vec<&str> = out.lines().collect();
                    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
                    format!("--- node {} ---\n{tail}\n", i + 1)
                }
                None => format!("--- node {} --- (stopped)\n", i + 1),
            })
            .collect()
    }

    /// Waits until the nodes in `among` agree on a leader among them; returns its id.
    pub fn leader(&self, among: &[usize], timeout: Duration) -> Result<usize> {
        let end = Instant::now() + timeout;
        loop {
            let views: Result<Vec<_>> = among.iter().map(|&i| self.view(i)).collect();
            if let Ok(vs) = views {
                let leaders: BTreeSet<_> = vs.iter().map(|v| v.leader).collect();
                if leaders.len() == 1
                    && let Some(Some(l)) = leaders.into_iter().next()
                    && among.contains(&(l.0 as usize))
                {
                    return Ok(l.0 as usize);
                }
            }
            if Instant::now() > end {
                bail!("no agreed leader among {among:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until `among` applied the same index with the same state hash, every one
    /// has a federated root and at least `completed` tasks completed.
    pub fn converged(
        &self,
        among: &[usize],
        completed: u64,
        timeout: Duration,
    ) -> Result<Vec<ClusterView>> {
        let end = Instant::now() + timeout;
        loop {
            let views: Result<Vec<_>> = among.iter().map(|&i| self.view(i)).collect();
            let last = match views {
                Ok(vs) => {
                    let same = vs
                        .iter()
                        .all(|v| v.applied == vs[0].applied && v.state_hash == vs[0].state_hash);
                    let rooted = vs.iter().all(|v| v.federated_root.is_some());
                    if same && rooted && vs.iter().all(|v| v.completed >= completed) {
                        return Ok(vs);
                    }
                    vs.iter()
                        .map(|v| {
                            format!(
                                "n{} applied {} done {} hash {}",
                                v.node.0,
                                v.applied,
                                v.completed,
                                v.state_hash.short()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                }
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > end {
                bail!("no convergence ({last})\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// A signed submission of built-in `hash` on `input` by `tenant`.
    pub fn hash_request(&self, tenant: u32, input: Vec<u8>) -> Result<SignedRequest> {
        self.request(tenant, Work::Builtin("hash".into()), input, 100)
    }

    pub fn request(
        &self,
        tenant: u32,
        work: Work,
        input: Vec<u8>,
        budget_ticks: u64,
    ) -> Result<SignedRequest> {
        self.request_in(tenant, Domain::K, work, input, budget_ticks, None)
    }

    /// A submission of any domain, optionally under a contract.
    pub fn request_in(
        &self,
        tenant: u32,
        domain: Domain,
        work: Work,
        input: Vec<u8>,
        budget_ticks: u64,
        contract: Option<u64>,
    ) -> Result<SignedRequest> {
        mgmt::signed(
            &self.keys,
            Principal::Tenant(TenantId(tenant)),
            Request::Submit(Submit {
                domain,
                contract,
                ..Submit::new(work, input, budget_ticks)
            }),
        )
    }

    /// Submits `n` hash tasks as tenant 1 through node `via` (retrying through failovers).
    pub fn submit(
        &self,
        via: usize,
        n: usize,
        tag: &str,
        timeout: Duration,
    ) -> Result<Vec<TaskId>> {
        (0..n)
            .map(|k| {
                let req = self.hash_request(1, format!("{tag} {k}").into_bytes())?;
                mgmt::submit_until_placed(self.port(via), &req, Instant::now() + timeout)
                    .map_err(|e| anyhow::anyhow!("{tag} {k}: {e:#}\n{}", self.logs()))
            })
            .collect()
    }
}

#[cfg(test)]
mod port_tests {
    #[test]
    fn free_ports_are_free_outside_the_ephemeral_range_and_never_handed_out_twice() {
        let a = super::free_ports(8);
        let b = super::free_ports(8);
        let c = super::free_port();
        for (first, n) in [(a, 8), (b, 8), (c, 1)] {
            assert!(super::TEST_PORTS.contains(&first));
            assert!(super::TEST_PORTS.contains(&(first + n - 1)));
            assert!((first..first + n).all(crate::cluster::port_free));
        }
        let (ra, rb) = (a..a + 8, b..b + 8);
        assert!(!ra.contains(&b) && !rb.contains(&a) && !ra.contains(&c) && !rb.contains(&c));
        // A port held by a listener is not free.
        let held = std::net::TcpListener::bind(("127.0.0.1", c)).unwrap();
        assert!(!crate::cluster::port_free(c));
        drop(held);
    }
}
