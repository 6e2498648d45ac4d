//! Node clocks that run at their own rates: what a node reads as `now` is its clock, not
//! the simulator's time, so leader leases meet clocks that drift (`paxos::Lease`).

use crate::types::Time;

/// A clock running `ppm` parts per million fast (or slow, if negative) since it was last
/// set, continuous across rate changes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    /// Simulator time when the rate was last set.
    since: Time,
    /// The clock's reading then.
    reading: Time,
    /// Rate error, in parts per million (above -1,000,000).
    ppm: i64,
}

impl Clock {
    /// The clock's reading at simulator time `now`.
    pub fn read(&self, now: Time) -> Time {
        let elapsed = i128::from(now.0.saturating_sub(self.since.0));
        let scaled = elapsed * i128::from(1_000_000 + self.ppm) / 1_000_000;
        Time(self.reading.0 + scaled as u64)
    }

    /// From simulator time `now` on, runs `ppm` parts per million off (clamped above
    /// -1,000,000: a clock never stops or runs backwards).
    pub fn set_rate(&mut self, now: Time, ppm: i64) {
        self.reading = self.read(now);
        self.since = now;
        self.ppm = ppm.max(-999_999);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_runs_at_its_rate_and_stays_continuous_when_the_rate_changes() {
        let mut clock = Clock::default();
        assert_eq!(clock.read(Time(1_000_000)), Time(1_000_000));
        clock.set_rate(Time(1_000_000), -500_000);
        assert_eq!(clock.read(Time(1_000_000)), Time(1_000_000));
        assert_eq!(clock.read(Time(3_000_000)), Time(2_000_000));
        clock.set_rate(Time(3_000_000), 10_000);
        assert_eq!(clock.read(Time(4_000_000)), Time(3_010_000));
        clock.set_rate(Time(4_000_000), -2_000_000);
        assert!(clock.read(Time(5_000_000)) > clock.read(Time(4_000_000)));
    }
}
