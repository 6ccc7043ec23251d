//! Device jobs as the state machine checks them before accepting a Q or Φ task: the
//! job must be of the task's domain and decode and validate in its wire form, so a
//! malformed circuit is refused at submission with a specific reason instead of
//! failing later on a device.

use crate::types::Domain;
use alloc::string::String;
use xdv_accel::job::{Circuit, Envelope};
use xdv_types::limits::MAX_MODULE_BYTES;

/// Largest device job carried in the log (the same room as a module).
pub const MAX_JOB_BYTES: usize = MAX_MODULE_BYTES;

/// `Err(reason)` if `job` is not a valid job of `domain`.
pub fn check(domain: Domain, job: &[u8]) -> Result<(), String> {
    if job.is_empty() {
        return Err(String::from("empty job"));
    }
    if job.len() > MAX_JOB_BYTES {
        return Err(alloc::format!(
            "job of {} bytes (limit {MAX_JOB_BYTES})",
            job.len()
        ));
    }
    match domain {
        Domain::K => Err(String::from("K tasks run modules, not device jobs")),
        Domain::Q => Circuit::decode(job)
            .map(|_| ())
            .map_err(|e| alloc::format!("circuit: {e}")),
        Domain::Phi => Envelope::decode(job)
            .map(|_| ())
            .map_err(|e| alloc::format!("envelope: {e}")),
    }
}
