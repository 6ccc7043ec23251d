//! The example device jobs in `examples/` parse and give what their comments say.

use xdv_accel_sim::{envelope, phisim, qasm, qsim};

fn read(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn bell_and_ghz_give_only_their_two_outcomes() {
    for (file, ones) in [("bell.qasm", 0b11u64), ("ghz.qasm", 0b1111)] {
        let c = qasm::parse(&read(file), 1000).unwrap();
        let r = qsim::run(&c, 42, 1000).unwrap();
        let keys: Vec<u64> = r.counts.iter().map(|c| c.0).collect();
        assert_eq!(keys, vec![0, ones], "{file}");
        assert!(
            r.counts.iter().all(|c| (400..=600).contains(&c.1)),
            "{file}: {:?}",
            r.counts
        );
    }
}

#[test]
fn the_stable_envelope_is_stable_and_the_unstable_one_is_not() {
    let s = phisim::run(&envelope::parse(&read("stable.toml")).unwrap()).unwrap();
    assert!(s.stable, "{s:?}");
    let u = phisim::run(&envelope::parse(&read("unstable.toml")).unwrap()).unwrap();
    assert!(!u.stable && u.unstable_window.is_some(), "{u:?}");
}
