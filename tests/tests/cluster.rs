//! A real XDV cluster: three QEMU nodes provisioned with keys (`-initrd`), Raft over
//! authenticated peer connections through the host switch, tasks submitted with
//! tenant-signed requests through a follower's management port, placed by the log,
//! run on every node, reported through the log. Then: refused requests (out of scope,
//! replayed, unsigned, garbage), the leader killed mid-stream (every task completes
//! exactly once), the killed node restarted on its RAM file (it catches up), a
//! partition (the minority commits nothing, the majority goes on; healing converges),
//! and every node's audit chain verified on the host from its RAM file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xdv::mgmt::{self, Client, Keys};
use xdv::qemu::{Config, Vm, temp_dir};
use xdv::switch::{Faults, SwitchConfig};
use xdv_cluster::mgmt::{ClusterView, Denied, Principal, Request, Response, SignedRequest, Submit};
use xdv_cluster::{Domain, TaskStatus, Work};
use xdv_types::{NodeId, Priority, TaskId, TenantId};

const T: Duration = Duration::from_secs(180);
const NODES: usize = 3;

struct Cluster {
    dir: PathBuf,
    keys: Keys,
    ports: Vec<u16>,
    vms: Vec<Option<Vm>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn boot(dir: &Path, id: usize, port: u16) -> Vm {
    let mut cfg = Config::kernel(&format!("node={id} ip=10.0.0.{id}/24"))
        .unwrap()
        .ram_file(dir.join(format!("node{id}.ram")))
        .with_nics(dir, id as u16, Some(port));
    cfg.extra.extend([
        "-initrd".into(),
        dir.join(format!("node{id}.prov")).display().to_string(),
    ]);
    let mut vm = Vm::spawn(&cfg).unwrap();
    vm.wait_for("xdv> ", T).unwrap();
    assert!(
        vm.output()
            .contains(&format!("xdv: provision: node {id} of cluster")),
        "{}",
        vm.output()
    );
    vm
}

impl Cluster {
    fn port(&self, i: usize) -> u16 {
        self.ports[i - 1]
    }

    fn view(&self, i: usize) -> anyhow::Result<ClusterView> {
        mgmt::cluster_view(self.port(i), &self.keys)
    }

    fn logs(&self) -> String {
        self.vms
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Some(vm) => format!("--- node {} ---\n{}\n", i + 1, tail(&vm.output())),
                None => format!("--- node {} --- (stopped)\n", i + 1),
            })
            .collect()
    }

    /// Waits until the running nodes in `among` agree on a leader; returns its id.
    fn leader(&self, among: &[usize]) -> usize {
        let end = Instant::now() + T;
        loop {
            let views: Vec<_> = among.iter().map(|&i| self.view(i)).collect();
            if let Ok(vs) = views.into_iter().collect::<anyhow::Result<Vec<_>>>() {
                let leaders: BTreeSet<_> = vs.iter().map(|v| v.leader).collect();
                if leaders.len() == 1
                    && let Some(Some(l)) = leaders.into_iter().next()
                    && among.contains(&(l.0 as usize))
                {
                    return l.0 as usize;
                }
            }
            assert!(Instant::now() < end, "no agreed leader\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until `among` have applied the same index with the same state hash and at
    /// least `completed` tasks completed; returns their views.
    fn converged(&self, among: &[usize], completed: u64) -> Vec<ClusterView> {
        let end = Instant::now() + T;
        loop {
            let views: anyhow::Result<Vec<_>> = among.iter().map(|&i| self.view(i)).collect();
            let last = match views {
                Ok(vs) => {
                    let same = vs
                        .iter()
                        .all(|v| v.applied == vs[0].applied && v.state_hash == vs[0].state_hash);
                    let rooted = vs.iter().all(|v| v.federated_root.is_some());
                    if same && rooted && vs.iter().all(|v| v.completed >= completed) {
                        return vs;
                    }
                    vs.iter()
                        .map(|v| {
                            format!(
                                "n{} applied {} done {} hash {:?}",
                                v.node.0,
                                v.applied,
                                v.completed,
                                &v.state_hash.0[..4]
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                }
                Err(e) => format!("{e:#}"),
            };
            assert!(
                Instant::now() < end,
                "no convergence ({last})\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Submits `n` hash tasks as tenant 1 through node `via`; returns their ids.
    fn submit(&self, via: usize, n: usize, tag: &str) -> Vec<TaskId> {
        (0..n)
            .map(|k| {
                let req = submit_request(&self.keys, 1, format!("{tag} {k}").into_bytes());
                let end = Instant::now() + T;
                mgmt::submit_until_placed(self.port(via), &req, end)
                    .unwrap_or_else(|e| panic!("{tag} {k}: {e:#}\n{}", self.logs()))
            })
            .collect()
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn submit_request(keys: &Keys, tenant: u32, input: Vec<u8>) -> SignedRequest {
    mgmt::signed(
        keys,
        Principal::Tenant(TenantId(tenant)),
        Request::Submit(Submit {
            work: Work::Builtin("hash".into()),
            input,
            budget_ticks: 100,
            priority: Priority::Normal,
            guards: vec![],
            needs: vec![],
            domain: Domain::K,
            pin: None,
        }),
    )
    .unwrap()
}

fn call(port: u16, req: &SignedRequest) -> Response {
    Client::connect(port, Duration::from_secs(5))
        .unwrap()
        .call(req, Duration::from_secs(15))
        .unwrap()
}

/// The host's own run of the `hash` module on `input`: the output hash the cluster must report.
fn host_hash(input: &[u8]) -> xdv_types::Hash32 {
    let b = xdv_sandbox::builtin("hash").unwrap();
    let v = xdv_sandbox::validate(&xdv_sandbox::TaskModule {
        tenant: TenantId(1),
        module: b.wasm.to_vec(),
        input: input.to_vec(),
        budget_ticks: 100,
        priority: Priority::Normal,
        guards: vec![],
    })
    .unwrap();
    let r = xdv_sandbox::run(&v, 100, 0);
    match r.outcome {
        xdv_sched::WorkOutcome::Completed { output_hash } => output_hash,
        other => panic!("host run: {other:?}"),
    }
}

fn verify_ram(ram: &Path) -> xdv_audit::VerifyReport {
    let bytes = std::fs::read(ram).unwrap();
    let off = xdv_audit::find_region(&bytes).expect("no audit region in the RAM file");
    let end = off + xdv_audit::DEFAULT_REGION_SIZE as usize;
    xdv_audit::verify_region(&bytes[off..end]).unwrap_or_else(|e| panic!("chain broken: {e}"))
}

#[test]
fn three_node_cluster_places_fails_over_partitions_and_converges() {
    let dir = temp_dir("cluster").unwrap();
    let keys = Keys::generate(NODES as u32, 2).unwrap();
    keys.save(&dir).unwrap();
    for id in 1..=NODES as u32 {
        std::fs::write(dir.join(format!("node{id}.prov")), keys.module(id).unwrap()).unwrap();
    }
    let sw = xdv::switch::spawn(SwitchConfig {
        dir: dir.clone(),
        ports: NODES as u16,
        seed: 11,
        faults: Faults::default(),
    })
    .unwrap();
    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let vms = (1..=NODES)
        .map(|i| Some(boot(&dir, i, ports[i - 1])))
        .collect();
    let mut cl = Cluster {
        dir: dir.clone(),
        keys,
        ports,
        vms,
    };
    let all: Vec<usize> = (1..=NODES).collect();

    // 1. A leader; 100 tasks through a follower, all complete, spread over every node.
    let leader = cl.leader(&all);
    let follower = all.iter().copied().find(|&i| i != leader).unwrap();
    let first = cl.submit(follower, 100, "first");
    assert_eq!(
        first.iter().collect::<BTreeSet<_>>().len(),
        100,
        "ids unique"
    );
    let vs = cl.converged(&all, 100);
    for m in &vs[0].members {
        assert!(
            m.completed > 0,
            "node {} ran nothing: {:?}",
            m.node.0,
            vs[0].members
        );
    }
    assert!(
        vs.iter()
            .all(|v| v.federated_root.is_some() && v.federated_root == vs[0].federated_root)
    );
    // The cluster's result is the host's result for the same module and input.
    let status = mgmt::wait_task(
        cl.port(follower),
        &cl.keys,
        Principal::Tenant(TenantId(1)),
        first[7],
        Instant::now() + T,
    )
    .unwrap();
    match status {
        TaskStatus::Completed {
            outcome,
            output_hash,
            ..
        } => {
            assert_eq!(outcome, xdv_cluster::Outcome::Executed);
            assert_eq!(output_hash, host_hash(b"first 7"));
        }
        other => panic!("task 7: {other:?}"),
    }

    // 2. Refused: out of scope, replayed submit, replayed query, unsigned, garbage.
    let p = cl.port(follower);
    let peek = mgmt::signed(
        &cl.keys,
        Principal::Tenant(TenantId(2)),
        Request::TaskStatus { task: first[0] },
    )
    .unwrap();
    assert_eq!(
        call(p, &peek),
        Response::Refused(Denied::OutOfScope { task: first[0] })
    );
    let once = submit_request(&cl.keys, 1, b"once".to_vec());
    let task = match call(p, &once) {
        Response::Submitted { task } => task,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        call(p, &once),
        Response::Refused(Denied::Duplicate { task })
    );
    let q = mgmt::signed(&cl.keys, Principal::Operator, Request::ClusterStatus).unwrap();
    assert!(matches!(call(p, &q), Response::Cluster(_)));
    assert!(matches!(
        call(p, &q),
        Response::Refused(Denied::Replayed { .. })
    ));
    let mut unsigned = submit_request(&cl.keys, 1, b"unsigned".to_vec());
    unsigned.signature.clear();
    assert_eq!(call(p, &unsigned), Response::Refused(Denied::BadSignature));
    let mut c = Client::connect(p, Duration::from_secs(5)).unwrap();
    c.send_raw(&[0xff; 300]).unwrap();
    drop(c);
    assert!(
        cl.view(follower).is_ok(),
        "node stopped serving after garbage"
    );
    let out = cl.vms[follower - 1]
        .as_mut()
        .unwrap()
        .command("cluster", "refused-requests", T)
        .unwrap();
    let refused: u64 = out
        .split("refused-requests ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(refused >= 4, "{out}");

    // 3. Kill the leader; tasks submitted during and after the failover complete once.
    let killed = leader;
    cl.vms[killed - 1].take().unwrap().kill();
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != killed).collect();
    let second = cl.submit(rest[0], 20, "second");
    let new_leader = cl.leader(&rest);
    assert_ne!(new_leader, killed);
    let vs = cl.converged(&rest, 121);
    assert_eq!(
        vs[0].tasks, 121,
        "a task ran twice or was lost: {:?}",
        vs[0]
    );
    assert!(second.iter().all(|t| !first.contains(t)));

    // 4. The killed node restarts on its RAM file and catches up to the same hash.
    cl.vms[killed - 1] = Some(boot(&dir, killed, cl.port(killed)));
    let vs = cl.converged(&all, 121);
    assert_eq!(vs[0].tasks, 121);

    // 5. Partition a follower away: the minority commits nothing, the majority goes on.
    let leader = cl.leader(&all);
    let lonely = all.iter().copied().find(|&i| i != leader).unwrap();
    let majority: Vec<usize> = all.iter().copied().filter(|&i| i != lonely).collect();
    let groups = format!(
        "partition {}/{lonely}",
        majority
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    sw.control(&groups).unwrap();
    let before = cl.view(lonely).unwrap().commit;
    cl.submit(majority[0], 10, "third");
    let vs = cl.converged(&majority, 131);
    assert!(vs[0].commit > before);
    std::thread::sleep(Duration::from_secs(2));
    let minority = cl.view(lonely).unwrap();
    assert_eq!(minority.commit, before, "the minority committed");
    sw.control("heal").unwrap();
    let vs = cl.converged(&all, 131);
    assert_eq!(vs[0].tasks, 131);

    // 6. Stop every node; every audit chain verifies on the host.
    for vm in cl.vms.iter_mut().filter_map(Option::take) {
        let mut vm = vm;
        vm.kill();
    }
    for id in 1..=NODES {
        let r = verify_ram(&cl.dir.join(format!("node{id}.ram")));
        assert_eq!(r.node, NodeId(id as u32));
        assert!(r.records > 100, "node {id}: {} records", r.records);
    }
}
