//! Waits that grow: the one rule every core uses for retrying something that went
//! unanswered. A retry waits `base` doubled per earlier attempt, up to a cap, plus the time
//! its payload takes to move at an assumed rate — so a large message is never sent again
//! while the first copy is still on its way, and a peer that is slow is not flooded.

use std::time::Duration;

/// `base` doubled `attempts` times, at most `cap` (or `base`, if larger).
pub fn backoff(base: Duration, attempts: u32, cap: Duration) -> Duration {
    base.saturating_mul(1 << attempts.min(16))
        .min(cap.max(base))
}

/// How long `bytes` take at `bytes_per_sec` (a rate of 0 counts as 1 byte/s).
pub fn transfer_time(bytes: usize, bytes_per_sec: u64) -> Duration {
    let rate = bytes_per_sec.max(1);
    Duration::from_micros((bytes as u64).saturating_mul(1_000_000) / rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_transfer_time_scales_with_size() {
        let ms = Duration::from_millis;
        assert_eq!(backoff(ms(50), 0, ms(1000)), ms(50));
        assert_eq!(backoff(ms(50), 3, ms(1000)), ms(400));
        assert_eq!(backoff(ms(50), 40, ms(1000)), ms(1000));
        assert_eq!(backoff(ms(2000), 1, ms(1000)), ms(2000));
        assert_eq!(transfer_time(16 << 20, 64 << 20), ms(250));
        assert_eq!(transfer_time(0, 0), Duration::ZERO);
    }
}
