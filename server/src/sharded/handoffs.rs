//! Timing shard handoffs for `/metrics` (`kv_shard_handoff_duration_seconds`).
//!
//! The shard-kv core reads no clock; what its status tells is the configuration each
//! group's replica applied, how many shards it serves and how many it still waits for
//! (`config`, `shards_serving`, `shards_arriving`). This node looks at each of its KV
//! replicas every [`HANDOFF_POLL`]. A handoff starts when a replica is seen at a newer
//! configuration (from the last sighting at the older one) or waiting for shards, and
//! ends at the first sighting with nothing arriving; it is recorded if shards did arrive
//! (some were seen arriving, or the replica serves more than before), and its duration
//! goes to the process's histogram ([`crate::metrics::PROCESS`]). So each handoff to a
//! replica on this node is timed from when its configuration changed to when its shards
//! were all in, overstated by at most two polls; a reconfiguration that moves several
//! shards to a group at once is one handoff. Moving from configuration 0 (no group holds
//! anything) is not a handoff: the first configuration's shards start empty.
//!
//! What it cannot see: a handoff completed between two polls that leaves the replica
//! serving as many shards as before (one shard in, another out).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::{Host, Input};
use crate::config::Role;
use crate::metrics::PROCESS;

/// How often each KV replica's configuration and arriving shards are looked at.
pub const HANDOFF_POLL: Duration = Duration::from_millis(100);

/// What one look at a replica found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sighting {
    /// The configuration it applied.
    pub config: u64,
    /// Shards it serves.
    pub serving: u64,
    /// Shards it waits for.
    pub arriving: u64,
}

/// A handoff under way.
#[derive(Debug)]
struct Handoff {
    since: Instant,
    serving_before: u64,
    arrived: bool,
}

/// One replica's last sighting and its handoff under way.
#[derive(Debug, Default)]
struct Watch {
    last: Option<(Sighting, Instant)>,
    handoff: Option<Handoff>,
}

/// The handoffs of every replica (by endpoint) being timed.
#[derive(Debug, Default)]
pub(super) struct HandoffClock {
    watches: BTreeMap<u32, Watch>,
}

impl HandoffClock {
    /// Takes a sighting of replica `endpoint` at `now`; the duration of the handoff it
    /// ends, if any.
    pub(super) fn saw(&mut self, endpoint: u32, seen: Sighting, now: Instant) -> Option<Duration> {
        let watch = self.watches.entry(endpoint).or_default();
        let advanced_from = watch
            .last
            .filter(|(last, _)| seen.config > last.config && last.config > 0);
        if watch.handoff.is_none() && (advanced_from.is_some() || seen.arriving > 0) {
            let (since, serving_before) = match advanced_from {
                Some((last, at)) => (at, last.serving),
                None => (now, seen.serving),
            };
            watch.handoff = Some(Handoff {
                since,
                serving_before,
                arrived: false,
            });
        }
        watch.last = Some((seen, now));
        let handoff = watch.handoff.as_mut()?;
        handoff.arrived |= seen.arriving > 0;
        if seen.arriving > 0 {
            return None;
        }
        let handoff = watch.handoff.take()?;
        (handoff.arrived || seen.serving > handoff.serving_before)
            .then(|| now.duration_since(handoff.since))
    }
}

impl Host {
    /// Times every handoff to this node's KV replicas until `stop` flips.
    pub(super) async fn time_handoffs(self: Arc<Host>, mut stop: watch::Receiver<bool>) {
        let mut clock = HandoffClock::default();
        let mut ticks = tokio::time::interval(HANDOFF_POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = ticks.tick() => {}
            }
            for (id, local) in &self.local {
                if !matches!(local.endpoint.role, Role::Group(_)) {
                    continue;
                }
                let (tx, rx) = oneshot::channel();
                if local.inputs.send(Input::Status(tx)).await.is_err() {
                    return;
                }
                let Ok(status) = rx.await else { return };
                let field = |name: &str| {
                    status
                        .core
                        .iter()
                        .find(|(field, _)| *field == name)
                        .and_then(|(_, value)| value.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                let seen = Sighting {
                    config: field("config"),
                    serving: field("shards_serving"),
                    arriving: field("shards_arriving"),
                };
                if let Some(took) = clock.saw(*id, seen, Instant::now()) {
                    PROCESS.shard_handoff_micros.observe_duration(took);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(config: u64, serving: u64, arriving: u64) -> Sighting {
        Sighting {
            config,
            serving,
            arriving,
        }
    }

    #[test]
    fn a_handoff_lasts_from_the_old_configurations_last_sighting_to_nothing_arriving() {
        let mut clock = HandoffClock::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(clock.saw(7, seen(0, 0, 0), at(0)), None);
        assert_eq!(
            clock.saw(7, seen(1, 4, 0), at(100)),
            None,
            "the first configuration is no handoff"
        );
        assert_eq!(
            clock.saw(7, seen(1, 4, 0), at(200)),
            None,
            "nothing changed"
        );
        assert_eq!(clock.saw(7, seen(2, 4, 2), at(300)), None, "arriving");
        assert_eq!(clock.saw(7, seen(2, 5, 1), at(400)), None, "still arriving");
        assert_eq!(
            clock.saw(7, seen(2, 6, 0), at(500)),
            Some(Duration::from_millis(300))
        );
        assert_eq!(clock.saw(7, seen(2, 6, 0), at(600)), None, "timed once");
        // A handoff done between two looks is seen by the shards served.
        assert_eq!(
            clock.saw(7, seen(3, 7, 0), at(700)),
            Some(Duration::from_millis(100))
        );
        // A configuration that only takes shards away is no handoff to this replica.
        assert_eq!(clock.saw(7, seen(4, 5, 0), at(800)), None);
        // Replicas are timed apart.
        assert_eq!(clock.saw(8, seen(4, 0, 1), at(800)), None);
        assert_eq!(
            clock.saw(8, seen(4, 1, 0), at(950)),
            Some(Duration::from_millis(150))
        );
    }
}
