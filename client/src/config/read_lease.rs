//! The cluster file's `[read_lease]` table: leader leases for reads, off unless present.

use serde::{Deserialize, Serialize};

/// The `[read_lease]` table: leader leases for reads (see the README's Reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadLease {
    /// How long a replica's acknowledgement binds it to its leader, in milliseconds
    /// (1..=[`READ_LEASE_MS_MAX`]); the leader counts on it for a little less.
    pub ms: u64,
    /// The bound on every node's clock-rate error the lease assumes, in parts per million
    /// (absent: [`CLOCK_DRIFT_PPM_DEFAULT`], 1%).
    #[serde(default = "clock_drift_default")]
    pub clock_drift_ppm: u32,
}

/// The longest read lease: below the 500 ms a follower waits for a silent leader before
/// it campaigns, so leases do not lengthen a failover.
pub const READ_LEASE_MS_MAX: u64 = 400;
/// The default clock-rate bound of leases: 1% (10,000 ppm), far above what a quartz clock
/// disciplined or not drifts (tens of ppm).
pub const CLOCK_DRIFT_PPM_DEFAULT: u32 = 10_000;
/// The largest clock-rate bound a lease may state: 50%.
pub const CLOCK_DRIFT_PPM_MAX: u32 = 500_000;

fn clock_drift_default() -> u32 {
    CLOCK_DRIFT_PPM_DEFAULT
}

impl ReadLease {
    /// A lease of `ms` milliseconds with the default clock bound.
    pub fn new(ms: u64) -> ReadLease {
        ReadLease {
            ms,
            clock_drift_ppm: CLOCK_DRIFT_PPM_DEFAULT,
        }
    }

    pub(super) fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=READ_LEASE_MS_MAX).contains(&self.ms) {
            return Err(format!(
                "read_lease.ms = {} is out of range: 1–{READ_LEASE_MS_MAX}",
                self.ms
            ));
        }
        if self.clock_drift_ppm > CLOCK_DRIFT_PPM_MAX {
            return Err(format!(
                "read_lease.clock_drift_ppm = {} is out of range: 0–{CLOCK_DRIFT_PPM_MAX}",
                self.clock_drift_ppm
            ));
        }
        Ok(())
    }
}
