//! Deterministic core assignment, pluggable so cluster placement can replace it.

use xdv_types::{CoreId, TaskId};

/// Most cores one scheduler drives (CoreId is u16; this keeps per-core arrays small).
pub const MAX_CORES: u16 = 256;

/// Picks the core a task runs on. Must be a pure function of its arguments.
pub trait Placement {
    /// `cores` is in `1..=MAX_CORES`; the result must be `< cores`.
    fn place(&self, task: TaskId, cores: u16) -> CoreId;
}

/// The seed's rule: `task_id & (cores - 1)` when `cores` is a power of two, and
/// `task_id % cores` otherwise. (For powers of two the two are equal, so the rule is
/// "task id modulo core count" throughout; the mask is just the cheap form.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaskPlacement;

impl Placement for MaskPlacement {
    fn place(&self, task: TaskId, cores: u16) -> CoreId {
        assert!(
            (1..=MAX_CORES).contains(&cores),
            "core count {cores} out of range"
        );
        let n = u64::from(cores);
        let core = if n.is_power_of_two() {
            task.0 & (n - 1)
        } else {
            task.0 % n
        };
        // core < n <= MAX_CORES fits u16.
        CoreId(core as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_and_modulo() {
        let p = MaskPlacement;
        assert_eq!(p.place(TaskId(13), 4), CoreId(1));
        assert_eq!(p.place(TaskId(13), 1), CoreId(0));
        assert_eq!(p.place(TaskId(13), 3), CoreId(1));
        assert_eq!(p.place(TaskId(u64::MAX), 8), CoreId(7));
        for cores in 1..=9u16 {
            for t in 0..100 {
                assert_eq!(u64::from(p.place(TaskId(t), cores).0), t % u64::from(cores));
            }
        }
    }
}
