//! A real XDV cluster: three QEMU nodes provisioned with keys (`-initrd`), Raft over
//! authenticated peer connections through the host switch, tasks submitted with
//! tenant-signed requests through a follower's management port, placed by the log,
//! run on every node, reported through the log. Then: refused requests (out of scope,
//! replayed, unsigned, garbage), the leader killed mid-stream (every task completes
//! exactly once, no committed entry lost), the killed node restarted on its RAM file
//! (it catches up), a partition (the minority commits nothing, the majority goes on;
//! healing converges), tasks through 10 % frame drop, an impostor node without the
//! cluster's key (no Raft traffic accepted), the NIC's counters (no descriptor
//! rejected), every node's audit chain verified on the host from its RAM file. That
//! whole scenario runs once per NIC model — virtio-net and the Intel 82574 (`e1000e`),
//! a NIC real servers have — each in one boot of three nodes; so do log compaction
//! with a snapshot install, and garbage and unauthenticated peers. Then: malformed or
//! mismatched provisioning modules refused at boot (no network involved).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use xdv::mgmt::{self, Client};
use xdv::qemu::{Config, NicModel, Vm, temp_dir};
use xdv::switch::Faults;
use xdv::testbed::Testbed;
use xdv_cluster::TaskStatus;
use xdv_cluster::mgmt::{Denied, Principal, Request, Response, SignedRequest};
use xdv_types::{NodeId, Priority, TenantId};

const T: Duration = Duration::from_secs(180);

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

/// The name the kernel gives a NIC model (`net: <name>` at boot, `net` command).
fn model_name(nic: NicModel) -> &'static str {
    match nic {
        NicModel::Virtio => "virtio-net",
        NicModel::E1000e => "e1000e",
    }
}

#[test]
fn three_node_cluster_on_virtio_net_places_fails_over_partitions_and_converges() {
    whole_cluster_scenario("cluster", 11, NicModel::Virtio);
}

#[test]
fn three_node_cluster_on_e1000e_places_fails_over_partitions_and_converges() {
    whole_cluster_scenario("cluster-e1000e", 13, NicModel::E1000e);
}

/// The cluster scenario on every node's peer and management NIC of model `nic`.
fn whole_cluster_scenario(tag: &str, seed: u64, nic: NicModel) {
    let mut cl = Testbed::launch_full(tag, 3, Faults::default(), seed, "", nic).unwrap();
    let all = [1usize, 2, 3];
    let model = model_name(nic);
    let other = model_name(match nic {
        NicModel::Virtio => NicModel::E1000e,
        NicModel::E1000e => NicModel::Virtio,
    });
    for i in all {
        let out = cl.vm(i).output();
        assert!(
            out.contains(&format!("xdv: provision: node {i} of cluster")),
            "{out}"
        );
        assert!(
            out.contains(&format!("net: {model}")),
            "node {i} not on {model}: {out}"
        );
        assert!(!out.contains(&format!("net: {other}")), "{out}");
    }

    // 1. A leader; 100 tasks through a follower, all complete, spread over every node.
    let leader = cl.leader(&all, T).unwrap();
    let follower = all.iter().copied().find(|&i| i != leader).unwrap();
    let first = cl.submit(follower, 100, "first", T).unwrap();
    assert_eq!(
        first.iter().collect::<BTreeSet<_>>().len(),
        100,
        "ids unique"
    );
    let vs = cl.converged(&all, 100, T).unwrap();
    for m in &vs[0].members {
        assert!(
            m.completed > 0,
            "node {} ran nothing: {:?}",
            m.node.0,
            vs[0].members
        );
    }
    assert!(vs.iter().all(|v| v.federated_root == vs[0].federated_root));
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
    let once = cl.hash_request(1, b"once".to_vec()).unwrap();
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
    let mut unsigned = cl.hash_request(1, b"unsigned".to_vec()).unwrap();
    unsigned.signature.clear();
    assert_eq!(call(p, &unsigned), Response::Refused(Denied::BadSignature));
    let mut c = Client::connect(p, Duration::from_secs(5)).unwrap();
    c.send_raw(&[0xff; 300]).unwrap();
    drop(c);
    assert!(
        cl.view(follower).is_ok(),
        "node stopped serving after garbage"
    );
    let out = cl
        .vm(follower)
        .command("cluster", "refused-requests", T)
        .unwrap();
    let refused: u64 = out
        .split("refused-requests ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(refused >= 4, "{out}");
    let out = cl.vm(follower).command("audit tail 40", "xdv>", T).unwrap();
    assert!(
        out.contains("RequestRefused"),
        "refusals not audited: {out}"
    );

    // Quotas: the operator limits tenant 2's task memory to 4 pages; its grow bomb now
    // stops there, tenant 1's still at 16. A tenant may not set quotas.
    let q = xdv_cluster::Quota {
        max_in_flight: 50,
        max_budget_ticks: 1_000_000,
        memory_pages: 4,
        table_elements: 100,
        max_q_units: 0,
        max_phi_windows: 0,
    };
    let by_tenant = mgmt::signed(
        &cl.keys,
        Principal::Tenant(TenantId(2)),
        Request::SetQuota {
            tenant: TenantId(2),
            quota: None,
        },
    )
    .unwrap();
    assert_eq!(call(p, &by_tenant), Response::Refused(Denied::OperatorOnly));
    mgmt::set_quota(p, &cl.keys, 2, Some(q)).unwrap();
    let mut pages = Vec::new();
    for tenant in [1u32, 2] {
        let req = cl
            .request(
                tenant,
                xdv_cluster::Work::Builtin("grow".into()),
                vec![],
                1000,
            )
            .unwrap();
        let task = mgmt::submit_until_placed(p, &req, Instant::now() + T).unwrap();
        let who = Principal::Tenant(TenantId(tenant));
        match mgmt::wait_task(p, &cl.keys, who, task, Instant::now() + T).unwrap() {
            TaskStatus::Completed { output, .. } => pages.push(output),
            other => panic!("grow for tenant {tenant}: {other:?}"),
        }
    }
    assert_eq!(
        pages,
        vec![16u32.to_le_bytes().to_vec(), 4u32.to_le_bytes().to_vec()]
    );
    let done: u64 = 101 + 2;

    // 3. Kill the leader; tasks submitted during and after the failover complete once,
    //    and nothing committed before the kill is lost.
    let committed = cl.view(leader).unwrap().commit;
    let killed = leader;
    cl.kill(killed);
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != killed).collect();
    let second = cl.submit(rest[0], 20, "second", T).unwrap();
    let new_leader = cl.leader(&rest, T).unwrap();
    assert_ne!(new_leader, killed);
    let vs = cl.converged(&rest, done + 20, T).unwrap();
    assert_eq!(
        vs[0].tasks,
        done + 20,
        "a task ran twice or was lost: {:?}",
        vs[0]
    );
    assert!(
        vs.iter().all(|v| v.applied >= committed),
        "committed entries lost"
    );
    assert!(second.iter().all(|t| !first.contains(t)));

    // 4. The killed node restarts on its RAM file and catches up to the same hash.
    cl.vms[killed - 1] = Some(cl.boot(killed, &format!("node{killed}.prov")).unwrap());
    let vs = cl.converged(&all, done + 20, T).unwrap();
    assert_eq!(vs[0].tasks, done + 20);

    // 5. Partition a follower away: the minority commits nothing, the majority goes on.
    let leader = cl.leader(&all, T).unwrap();
    let lonely = all.iter().copied().find(|&i| i != leader).unwrap();
    let majority: Vec<usize> = all.iter().copied().filter(|&i| i != lonely).collect();
    let groups = format!("partition {},{}/{lonely}", majority[0], majority[1]);
    cl.switch.control(&groups).unwrap();
    let before = cl.view(lonely).unwrap().commit;
    cl.submit(majority[0], 10, "third", T).unwrap();
    let vs = cl.converged(&majority, done + 30, T).unwrap();
    assert!(vs[0].commit > before);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        cl.view(lonely).unwrap().commit,
        before,
        "the minority committed"
    );
    cl.switch.control("heal").unwrap();
    let vs = cl.converged(&all, done + 30, T).unwrap();
    assert_eq!(vs[0].tasks, done + 30);

    // 6. 10 % of frames dropped: tasks still complete once each, every node converges.
    cl.switch.control("drop 10").unwrap();
    let leader = cl.leader(&all, T).unwrap();
    let via = all.iter().copied().find(|&i| i != leader).unwrap();
    cl.submit(via, 30, "lossy", T).unwrap();
    let vs = cl.converged(&all, done + 60, T).unwrap();
    assert_eq!(vs[0].tasks, done + 60);
    assert!(vs.iter().all(|v| v.federated_root == vs[0].federated_root));
    cl.switch.control("drop 0").unwrap();
    let done = done + 30;

    // 7. An impostor takes node `lonely`'s place with a key the cluster does not know:
    //    the others refuse its handshake and accept none of its Raft traffic.
    cl.kill(lonely);
    let mut fake = cl.keys.clone();
    fake.nodes[lonely - 1].1 = "66".repeat(32);
    std::fs::write(
        cl.dir.join("impostor.prov"),
        fake.module(lonely as u32).unwrap(),
    )
    .unwrap();
    let honest_ram = cl.dir.join(format!("node{lonely}.ram"));
    std::fs::rename(&honest_ram, cl.dir.join("honest.ram")).unwrap();
    cl.vms[lonely - 1] = Some(cl.boot(lonely, "impostor.prov").unwrap());
    let end = Instant::now() + T;
    loop {
        let out = cl.vm(majority[0]).command("peers", "auth:", T).unwrap();
        let refused = out
            .rsplit("auth: ")
            .next()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if refused > 0 {
            break;
        }
        assert!(Instant::now() < end, "impostor not refused: {out}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let imp = cl.view(lonely).unwrap();
    // Only its own bootstrap entry: nothing of the cluster's log reached it.
    assert!(
        imp.commit <= 1 && imp.applied == 0 && imp.tasks == 0,
        "{imp:?}"
    );
    cl.submit(majority[0], 3, "fourth", T).unwrap();
    cl.converged(&majority, done + 33, T).unwrap();
    cl.kill(lonely);
    std::fs::rename(cl.dir.join("honest.ram"), &honest_ram).unwrap();

    // 8. The NIC: link up, the driver rejected no descriptor the whole run, and
    // frames woke the node by interrupt (both models: MSI-X on the receive queue).
    let out = cl
        .vm(majority[0])
        .command("net", "interrupts taken per NIC vector", T)
        .unwrap();
    let peer = out
        .lines()
        .find(|l| l.starts_with("peer: "))
        .unwrap_or_else(|| panic!("no peer line: {out}"));
    assert!(peer.contains(model) && peer.contains("link up"), "{out}");
    assert!(out.contains("errors 0"), "descriptors rejected: {out}");
    assert!(
        out.contains("receive: interrupt-driven (MSI-X"),
        "{model} polled: {out}"
    );
    let taken: u64 = out
        .split("interrupts taken per NIC vector: [")
        .nth(1)
        .and_then(|r| r.split([',', ']']).next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no interrupt count: {out}"));
    assert!(taken > 0, "no receive interrupt on {model}: {out}");

    // 9. Stop every node; every audit chain verifies on the host.
    for i in all {
        cl.kill(i);
    }
    for id in all {
        let r = verify_ram(&cl.dir.join(format!("node{id}.ram")));
        assert_eq!(r.node, NodeId(id as u32));
        assert!(r.records > 100, "node {id}: {} records", r.records);
    }
    // The verification view: every root a node published is its region's, no node
    // recorded an audit-root alarm, every node published, and the log took later
    // roots (each with a consistency proof that held at run time) — how many a node
    // published depends on how long it ran since its last start.
    let images = cl.node_images(&all).unwrap();
    let report = xdv::operate::verify_nodes(&images);
    for c in &report.nodes {
        assert!(c.ok(), "node {:?}: {:?}", c.node, c.problems);
        assert!(c.roots_checked >= 1, "node {:?} published no root", c.node);
    }
    let pairs: u64 = report.nodes.iter().map(|c| c.consistency_checked).sum();
    assert!(
        pairs >= 2,
        "{pairs} successive published roots over all nodes"
    );
}

fn boot_with_module(dir: &Path, cmdline: &str, module: &[u8]) -> String {
    std::fs::write(dir.join("m.prov"), module).unwrap();
    let mut cfg = Config::kernel(cmdline).unwrap();
    cfg.extra
        .extend(["-initrd".into(), dir.join("m.prov").display().to_string()]);
    let mut vm = Vm::spawn(&cfg).unwrap();
    vm.wait_for("xdv> ", T).unwrap();
    vm.output()
}

#[test]
fn bad_provisioning_modules_are_refused_at_boot() {
    let dir = temp_dir("prov").unwrap();
    let keys = xdv::mgmt::Keys::generate(3, 1).unwrap();
    let good = keys.module(2).unwrap();
    let out = boot_with_module(&dir, "node=2", &good);
    assert!(out.contains("xdv: provision: node 2 of cluster"), "{out}");
    // A flipped byte breaks the checksum.
    let mut bad = good.clone();
    bad[30] ^= 1;
    let out = boot_with_module(&dir, "node=2", &bad);
    assert!(
        out.contains("xdv: provision: module refused: SHA-256 checksum does not match"),
        "{out}"
    );
    assert!(
        out.contains("cluster: node 2 of cluster 0 with 0 members"),
        "{out}"
    );
    // The module is for node 2, the command line says node 3.
    let out = boot_with_module(&dir, "node=3", &good);
    assert!(
        out.contains("module refused: command line says node=3 but the module is for node 2"),
        "{out}"
    );
    // Truncated.
    let out = boot_with_module(&dir, "", &good[..good.len() - 9]);
    assert!(out.contains("module refused: module is"), "{out}");
}

/// `snapshot at N, log from M` from a node's `raft` console line.
fn snapshot_point(vm: &mut Vm) -> (u64, u64) {
    let out = vm.command("raft", "log from", T).unwrap();
    let line = out.lines().rfind(|l| l.contains("snapshot at")).unwrap();
    let num = |key: &str| -> u64 {
        line.split(key)
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no `{key}` in {line}"))
    };
    (num("snapshot at "), num("log from "))
}

#[test]
fn large_modules_compact_the_log_and_a_lagging_node_installs_the_snapshot() {
    snapshot_scenario("cluster-snap", NicModel::Virtio);
}

#[test]
fn large_modules_compact_the_log_and_a_lagging_node_installs_the_snapshot_on_e1000e() {
    snapshot_scenario("cluster-snap-e1000e", NicModel::E1000e);
}

/// Log compaction and a snapshot install (large frames: ~60 KiB entries) over `nic`.
fn snapshot_scenario(tag: &str, nic: NicModel) {
    // A 2 MiB Raft region (default 8 MiB) so a dozen large entries fill a quarter of it.
    let mut cl =
        Testbed::launch_full(tag, 3, Faults::default(), 3, "raft=0x5000000,0x200000", nic).unwrap();
    let leader = cl.leader(&[1, 2, 3], T).unwrap();
    let lagging = if leader == 3 { 2 } else { 3 };
    let live: Vec<usize> = [1, 2, 3].into_iter().filter(|&i| i != lagging).collect();
    cl.kill(lagging);
    // ~60 KiB modules: the durable Raft image passes a quarter of the region after
    // about 9 of them, which forces a snapshot and compaction.
    let module = wat::parse_str(format!(
        r#"(module (memory 1) (data (i32.const 0) "{}") (func (export "run")))"#,
        "\\2a".repeat(60_000)
    ))
    .unwrap();
    for k in 0..16u64 {
        let req = cl
            .request(1, xdv_cluster::Work::Wasm(module.clone()), Vec::new(), 50)
            .unwrap();
        if k == 0 {
            assert!(xdv_cluster::mgmt::encode(&req).len() > 60_000);
        }
        mgmt::submit_until_placed(cl.port(live[0]), &req, Instant::now() + T)
            .unwrap_or_else(|e| panic!("task {k}: {e:#}\n{}", cl.logs()));
    }
    let vs = cl.converged(&live, 16, T).unwrap();
    assert_eq!(vs[0].tasks, 16);
    let (snap, from) = snapshot_point(cl.vm(live[0]));
    assert!(
        snap > 1 && from > snap,
        "no compaction: snapshot {snap} log from {from}"
    );
    // The lagging node's log ends before the leader's first entry: it must install
    // the snapshot (the cluster state image) and then replay the rest.
    cl.vms[lagging - 1] = Some(cl.boot(lagging, &format!("node{lagging}.prov")).unwrap());
    let vs = cl.converged(&[1, 2, 3], 16, T).unwrap();
    assert_eq!(vs[0].tasks, 16);
    let (snap, _) = snapshot_point(cl.vm(lagging));
    assert!(snap > 1, "the lagging node did not install a snapshot");
}

/// (bad frames total, handshakes refused, unauthenticated frames dropped) from `peers`.
fn peer_counters(vm: &mut Vm) -> (u64, u64, u64) {
    let out = vm
        .command("peers", "frames from unauthenticated peers", T)
        .unwrap();
    let after = |key: &str| -> u64 {
        out.rsplit(key)
            .next()
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no `{key}` in {out}"))
    };
    let auth_line = out.lines().rfind(|l| l.starts_with("auth: ")).unwrap();
    let words: Vec<&str> = auth_line.split_whitespace().collect();
    (
        after(" total="),
        words[1].parse().unwrap(),
        words[4].parse().unwrap(),
    )
}

fn frame(source: u32, msg: &xdv_net::wire::ClusterMessage) -> Vec<u8> {
    let hdr = xdv_net::wire::FrameHeader {
        source: NodeId(source),
        target: NodeId(3),
        timestamp: xdv_types::Timestamp(1),
        message_id: 1,
    };
    xdv_net::wire::encode_frame(&hdr, msg).unwrap()
}

#[test]
fn garbage_and_unauthenticated_peers_on_the_peer_port_are_refused_and_counted() {
    fake_peer_scenario("cluster-fake", NicModel::Virtio);
}

#[test]
fn garbage_and_unauthenticated_peers_are_refused_and_counted_on_e1000e() {
    fake_peer_scenario("cluster-fake-e1000e", NicModel::E1000e);
}

/// A fake peer on the switch sends garbage and unauthenticated frames to node 3's `nic`.
fn fake_peer_scenario(tag: &str, nic: NicModel) {
    use xdv::fakepeer::FakePeer;
    use xdv_net::wire::{ClusterMessage, Hello, PEER_TCP_PORT};
    let mut cl = Testbed::prepare(tag, 3, Faults::default(), 9, "").unwrap();
    cl.nic = nic;
    // Node 1 stays off, so node 3 has a free socket accepting peers on 7100.
    for id in [2, 3] {
        cl.vms[id - 1] = Some(cl.boot(id, &format!("node{id}.prov")).unwrap());
    }
    cl.leader(&[2, 3], T).unwrap();
    let (bad0, refused0, dropped0) = peer_counters(cl.vm(3));
    let mut fake = FakePeer::attach(&cl.dir, 4, [10, 0, 0, 9]).unwrap();
    let n3 = [10, 0, 0, 3];
    let w = Duration::from_secs(20);

    // Garbage, then an oversized length prefix: counted, connection closed.
    fake.connect(n3, PEER_TCP_PORT, T).unwrap();
    fake.send(&[0xab; 700], w).unwrap();
    assert!(fake.wait_closed(w), "garbage did not close the connection");
    fake.connect(n3, PEER_TCP_PORT, T).unwrap();
    let mut huge = u32::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(&[0; 64]);
    fake.send(&huge, w).unwrap();
    assert!(
        fake.wait_closed(w),
        "oversized frame did not close the connection"
    );

    // A Hello from a node that is not a member: refused.
    fake.connect(n3, PEER_TCP_PORT, T).unwrap();
    let hello = |node| {
        ClusterMessage::Hello(Hello {
            node: NodeId(node),
            nonce: [7; 32],
        })
    };
    fake.send(&frame(9, &hello(9)), w).unwrap();
    assert!(fake.wait_closed(w), "non-member Hello accepted");

    // A Hello claiming to be member 1, without the Auth only node 1's key can make,
    // followed by Raft traffic: the Raft frames are dropped and counted.
    fake.connect(n3, PEER_TCP_PORT, T).unwrap();
    let mut bytes = frame(1, &hello(1));
    for _ in 0..3 {
        bytes.extend(frame(1, &ClusterMessage::Raft(vec![1, 2, 3, 4])));
    }
    fake.send(&bytes, w).unwrap();
    fake.run_for(Duration::from_secs(2));

    let (bad, refused, dropped) = peer_counters(cl.vm(3));
    assert!(bad >= bad0 + 2, "bad frames {bad0} -> {bad}");
    assert!(
        refused > refused0,
        "handshakes refused {refused0} -> {refused}"
    );
    assert!(
        dropped >= dropped0 + 3,
        "unauthenticated dropped {dropped0} -> {dropped}"
    );
    // The node keeps serving and the cluster keeps committing.
    cl.submit(2, 5, "after-fake", T).unwrap();
    let vs = cl.converged(&[2, 3], 5, T).unwrap();
    assert_eq!(vs[0].tasks, 5);
}
