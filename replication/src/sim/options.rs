//! The simulator's knobs: network faults and a run's options.

use std::time::Duration;

use kv_engine::store::StoreOptions;
use kv_engine::wal::WalOptions;

use crate::rng::Rng;

/// Network fault knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Probability a message is lost.
    pub drop: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Smallest one-way delay.
    pub delay_min: Duration,
    /// Largest ordinary one-way delay (random delays reorder messages).
    pub delay_max: Duration,
    /// Probability of an extra long delay.
    pub long_delay: f64,
    /// Largest extra long delay.
    pub long_delay_max: Duration,
    /// Probability that a node, having just sent a call's early messages
    /// ([`Effects::send_early`]), crashes before that call's persists are durable (and is
    /// restarted at once): the window early sends open.
    pub crash_after_early_send: f64,
    /// Bytes per second each directed link carries (0: unlimited). Messages on one link are
    /// transmitted one after another, so a large message delays the ones behind it, as a
    /// TCP connection does.
    pub bandwidth: u64,
}

impl Faults {
    /// A reliable network with small random delays.
    pub fn none() -> Faults {
        Faults {
            drop: 0.0,
            duplicate: 0.0,
            delay_min: Duration::from_micros(500),
            delay_max: Duration::from_millis(2),
            long_delay: 0.0,
            long_delay_max: Duration::ZERO,
            crash_after_early_send: 0.0,
            bandwidth: 0,
        }
    }

    /// A random fault mix for a sweep seed: every probability and delay drawn uniformly
    /// up to its ceiling in `most` (the delay floor from 100 µs to 1 ms, the long-delay
    /// length from 10 ms).
    pub fn random(rng: &mut Rng, most: FaultCeilings) -> Faults {
        Faults {
            drop: rng.unit() * most.drop,
            duplicate: rng.unit() * most.duplicate,
            delay_min: Duration::from_micros(rng.range(100, 1000)),
            delay_max: Duration::from_micros(rng.range(1000, most.delay_max_micros)),
            long_delay: rng.unit() * most.long_delay,
            long_delay_max: Duration::from_millis(rng.range(10, most.long_delay_max_millis)),
            crash_after_early_send: rng.unit() * most.crash_after_early_send,
            bandwidth: 0,
        }
    }
}

/// Ceilings for [`Faults::random`].
#[derive(Debug, Clone, Copy)]
pub struct FaultCeilings {
    /// Largest message-loss probability.
    pub drop: f64,
    /// Largest duplication probability.
    pub duplicate: f64,
    /// Largest ordinary one-way delay, in microseconds.
    pub delay_max_micros: u64,
    /// Largest probability of an extra long delay.
    pub long_delay: f64,
    /// Largest extra long delay, in milliseconds.
    pub long_delay_max_millis: u64,
    /// Largest probability of a crash right after early sends.
    pub crash_after_early_send: f64,
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Tick period of every node.
    pub tick: Duration,
    /// Store settings for every node's disk.
    pub store: StoreOptions,
    /// The network.
    pub faults: Faults,
    /// Keep this many recent trace lines (0: none).
    pub trace_lines: usize,
    /// Messages larger than this are lost, as the transport refuses a frame over its limit
    /// (and closes the connection).
    pub message_bytes_max: usize,
    /// How long a node's fsync takes: its sends and replies wait that long behind it.
    pub fsync_latency: Duration,
    /// Virtual time one input keeps a node busy; messages arriving meanwhile are handled
    /// together as one burst (zero: every message alone, at once).
    pub step_cost: Duration,
    /// A node whose messages, to it and from it, the network never loses nor delays long
    /// (partitions still cut them): the lab's view service, which its servers reach on
    /// local sockets.
    pub steady_node: Option<usize>,
}

impl SimOptions {
    /// `nodes` nodes, 10 ms ticks, small WAL segments, a reliable network.
    pub fn new(nodes: usize) -> SimOptions {
        SimOptions {
            nodes,
            tick: Duration::from_millis(10),
            store: StoreOptions {
                wal: WalOptions {
                    segment_bytes_max: 64 * 1024,
                    // Disk-use budgets (Test5DiskUse) count every byte; a spare segment
                    // would be up to 64 KiB of them, zeros ahead of the records as much.
                    recycle: false,
                    prefill_bytes: 0,
                },
                snapshots_retained: 1,
            },
            faults: Faults::none(),
            trace_lines: 0,
            message_bytes_max: usize::MAX,
            fsync_latency: Duration::from_micros(200),
            step_cost: Duration::ZERO,
            steady_node: None,
        }
    }
}

impl SimOptions {
    /// Draws a node's speeds for a sweep seed: an fsync latency from 0 to 2 ms and a cost
    /// per input from 0 to 50 µs (so inputs also arrive in bursts).
    pub fn random_speeds(&mut self, rng: &mut Rng) {
        self.fsync_latency = Duration::from_micros(rng.below(2_001));
        self.step_cost = Duration::from_micros(rng.below(51));
    }
}
