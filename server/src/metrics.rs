//! What the server measures itself, and the one Prometheus text writer every metric goes
//! through.
//!
//! The cores (`kv-engine`, `kv-replication`) read no clock and count only events; timing
//! is measured here, where the IO happens: each client command's latency (RESP and the
//! native protocol, by command), and how long a shard took to arrive. Every distribution is
//! a [`Histogram`] (the engine's: fixed log-scale buckets, lock-free), recorded in
//! microseconds and exposed in seconds.
//!
//! The figures are per process: [`PROCESS`] is a `static`, and a production process runs
//! one node. (Tests that run several nodes in one process see their sum.)
//!
//! [`Exposition`] renders the Prometheus text format, version 0.0.4: every family gets one
//! `# HELP` and one `# TYPE` line before its samples, counters end in `_total`, histograms
//! have cumulative `_bucket{le=...}` samples ending at `+Inf`, then `_sum` and `_count`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use kv_engine::histogram::{Histogram, HistogramSnapshot};

/// RESP commands as INFO's commandstats and `/metrics` name them (Redis's lower-case
/// names; READWRITE is counted as `readonly`, UNLINK as `del`).
pub const RESP_COMMANDS: [&str; 25] = [
    "get", "set", "append", "del", "exists", "mget", "ping", "echo", "info", "quit", "select",
    "dbsize", "scan", "keys", "command", "cluster", "asking", "readonly", "hello", "auth",
    "client", "config", "multi", "exec", "discard",
];

/// Native-protocol client frames, by name.
pub const NATIVE_COMMANDS: [&str; 2] = ["request", "status"];

/// One command's calls: their latencies and how many got an error reply.
#[derive(Debug, Default)]
pub struct CommandStats {
    /// Latency of each call, in microseconds, from when the command was read to when its
    /// reply was ready.
    pub latency_micros: Histogram,
    /// Calls run and answered with an error.
    pub failed: AtomicU64,
    /// Calls refused before they ran (not authenticated, or sent to another node); not
    /// in the latency histogram.
    pub rejected: AtomicU64,
}

impl CommandStats {
    const fn new() -> CommandStats {
        CommandStats {
            latency_micros: Histogram::new(),
            failed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    /// Records one call that started at `started`.
    pub fn record(&self, started: Instant, failed: bool) {
        self.latency_micros.observe_duration(started.elapsed());
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one call refused before it ran.
    pub fn reject(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything this process measures outside the cores.
#[derive(Debug)]
pub struct ProcessMetrics {
    /// Per RESP command, in [`RESP_COMMANDS`] order.
    pub resp: [CommandStats; RESP_COMMANDS.len()],
    /// Per native client frame, in [`NATIVE_COMMANDS`] order.
    pub native: [CommandStats; NATIVE_COMMANDS.len()],
    /// RESP connections accepted (INFO's `total_connections_received`).
    pub resp_connections: AtomicU64,
    /// GET and MGET keys found (INFO's `keyspace_hits`).
    pub keyspace_hits: AtomicU64,
    /// GET and MGET keys not found (INFO's `keyspace_misses`).
    pub keyspace_misses: AtomicU64,
    /// How long each shard took to arrive at a group of this node, in microseconds: from
    /// when the group was first seen waiting for it to when it served it.
    pub shard_handoff_micros: Histogram,
    started: OnceLock<Instant>,
    /// The last sample of `(when, commands processed)` INFO's ops-per-second rate is
    /// measured from, and the rate it gave.
    rate: Mutex<Option<(Instant, u64, f64)>>,
}

/// This process's measurements.
pub static PROCESS: ProcessMetrics = ProcessMetrics {
    resp: [const { CommandStats::new() }; RESP_COMMANDS.len()],
    native: [const { CommandStats::new() }; NATIVE_COMMANDS.len()],
    resp_connections: AtomicU64::new(0),
    keyspace_hits: AtomicU64::new(0),
    keyspace_misses: AtomicU64::new(0),
    shard_handoff_micros: Histogram::new(),
    started: OnceLock::new(),
    rate: Mutex::new(None),
};

/// Shortest interval the ops-per-second rate is measured over: INFO calls closer together
/// than this report the previous rate.
const RATE_INTERVAL_MIN: Duration = Duration::from_millis(100);

impl ProcessMetrics {
    /// Marks the process as started (the first call wins); uptime counts from here.
    pub fn start(&self) {
        self.started.get_or_init(Instant::now);
    }

    /// Time since [`ProcessMetrics::start`].
    pub fn uptime(&self) -> Duration {
        self.started.get_or_init(Instant::now).elapsed()
    }

    /// The stats of RESP command `name` (one of [`RESP_COMMANDS`]).
    pub fn resp_command(&self, name: &str) -> &CommandStats {
        let index = RESP_COMMANDS
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("{name} is not in RESP_COMMANDS"));
        &self.resp[index]
    }

    /// RESP commands processed so far.
    pub fn resp_commands_processed(&self) -> u64 {
        self.resp
            .iter()
            .map(|c| c.latency_micros.snapshot().count())
            .sum()
    }

    /// RESP commands per second between the previous call (at least
    /// [`RATE_INTERVAL_MIN`] earlier) and this one: Redis's `instantaneous_ops_per_sec`,
    /// measured over the interval between INFO calls (0 on the first).
    pub fn ops_per_sec(&self) -> f64 {
        let now = Instant::now();
        let total = self.resp_commands_processed();
        let mut rate = self.rate.lock().expect("rate lock");
        match *rate {
            Some((at, _, ops)) if now.duration_since(at) < RATE_INTERVAL_MIN => ops,
            Some((at, before, _)) => {
                let ops =
                    total.saturating_sub(before) as f64 / now.duration_since(at).as_secs_f64();
                *rate = Some((now, total, ops));
                ops
            }
            None => {
                *rate = Some((now, total, 0.0));
                0.0
            }
        }
    }

    /// Renders the process's families (labelled with `node`).
    pub fn render(&self, out: &mut Exposition, node: u32) {
        let node = node.to_string();
        out.family(
            "kv_request_duration_seconds",
            Kind::Histogram,
            "Client command latency, from reading the command to its reply being ready.",
        );
        // Every command of every protocol, with its labels.
        let node = &node[..];
        let commands = || {
            let protocols = [
                ("resp", &RESP_COMMANDS[..], &self.resp[..]),
                ("native", &NATIVE_COMMANDS[..], &self.native[..]),
            ];
            protocols.into_iter().flat_map(|(protocol, names, stats)| {
                names.iter().zip(stats).map(move |(command, stats)| {
                    let labels = [
                        ("node", node),
                        ("protocol", protocol),
                        ("command", *command),
                    ];
                    (labels, stats)
                })
            })
        };
        for (labels, stats) in commands() {
            out.histogram(&labels, &stats.latency_micros.snapshot(), MICROS);
        }
        let outcomes: [Outcome; 2] = [
            (
                "kv_request_errors_total",
                "Client commands run and answered with an error.",
                |stats| &stats.failed,
            ),
            (
                "kv_requests_rejected_total",
                "Client commands refused before they ran (not authenticated, or for another node).",
                |stats| &stats.rejected,
            ),
        ];
        for (name, help, counter) in outcomes {
            out.family(name, Kind::Counter, help);
            for (labels, stats) in commands() {
                out.sample(&labels, counter(stats).load(Ordering::Relaxed));
            }
        }
        let counters = [
            (
                "kv_resp_connections_received_total",
                "RESP connections accepted.",
                &self.resp_connections,
            ),
            (
                "kv_keyspace_hits_total",
                "Keys GET and MGET found.",
                &self.keyspace_hits,
            ),
            (
                "kv_keyspace_misses_total",
                "Keys GET and MGET did not find.",
                &self.keyspace_misses,
            ),
        ];
        for (name, help, value) in counters {
            out.family(name, Kind::Counter, help);
            out.sample(&[("node", node)], value.load(Ordering::Relaxed));
        }
        out.family(
            "kv_shard_handoff_duration_seconds",
            Kind::Histogram,
            "How long a shard took to arrive at a group on this node once it was waited for.",
        );
        out.histogram(
            &[("node", node)],
            &self.shard_handoff_micros.snapshot(),
            MICROS,
        );
        out.family(
            "kv_uptime_seconds",
            Kind::Gauge,
            "Seconds since the process started.",
        );
        out.sample(&[("node", node)], self.uptime().as_secs());
    }
}

/// A per-command counter family: its name, help, and which counter of a command it is.
type Outcome = (&'static str, &'static str, fn(&CommandStats) -> &AtomicU64);

/// Divisor of a histogram recorded in microseconds and exposed in seconds.
pub const MICROS: f64 = 1e6;
/// Divisor of a histogram of counts.
pub const UNITS: f64 = 1.0;

/// A metric family's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever grows (resets when the process restarts); named `..._total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution: `_bucket`, `_sum`, `_count`.
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A Prometheus text-format page being written: a family's header, then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
    family: String,
    /// Families written so far (each may appear once).
    written: Vec<String>,
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts family `name`: its `# HELP` and `# TYPE` lines. A family already written is
    /// a bug in the caller (Prometheus rejects a page that repeats one).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        assert!(
            !self.written.iter().any(|n| n == name),
            "metric family {name} written twice"
        );
        assert_eq!(
            kind == Kind::Counter,
            name.ends_with("_total"),
            "{name}: counters, and only counters, end in _total"
        );
        self.written.push(name.to_string());
        self.family = name.to_string();
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        self.text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {}\n",
            kind.name()
        ));
    }

    /// One sample of the current (counter or gauge) family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let name = self.family.clone();
        self.line(&name, labels, None, &value.to_string());
    }

    /// One histogram of the current family, its values divided by `divisor` (such as
    /// [`MICROS`] for durations recorded in microseconds).
    pub fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        snapshot: &HistogramSnapshot,
        divisor: f64,
    ) {
        let name = self.family.clone();
        let bucket = format!("{name}_bucket");
        for (bound, count) in snapshot.cumulative() {
            let le = bound.map_or_else(|| "+Inf".to_string(), |b| float(b as f64 / divisor));
            self.line(&bucket, labels, Some(&le), &count.to_string());
        }
        self.line(
            &format!("{name}_sum"),
            labels,
            None,
            &float(snapshot.sum as f64 / divisor),
        );
        self.line(
            &format!("{name}_count"),
            labels,
            None,
            &snapshot.count().to_string(),
        );
    }

    fn line(&mut self, name: &str, labels: &[(&str, &str)], le: Option<&str>, value: &str) {
        self.text.push_str(name);
        let pairs = labels.iter().copied().chain(le.map(|le| ("le", le)));
        let rendered: Vec<String> = pairs
            .map(|(key, value)| format!("{key}=\"{}\"", escape_label(value)))
            .collect();
        if !rendered.is_empty() {
            self.text.push('{');
            self.text.push_str(&rendered.join(","));
            self.text.push('}');
        }
        self.text.push(' ');
        self.text.push_str(value);
        self.text.push('\n');
    }

    /// The page.
    pub fn finish(self) -> String {
        self.text
    }
}

/// A float as Prometheus reads it (no exponent needed; integers without a fraction).
fn float(value: f64) -> String {
    format!("{value}")
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_renders_cumulative_buckets_in_base_units_then_sum_and_count() {
        let histogram = Histogram::new();
        histogram.observe_duration(Duration::from_micros(3));
        histogram.observe_duration(Duration::from_micros(1500));
        let mut page = Exposition::new();
        page.family("kv_x_seconds", Kind::Histogram, "X.");
        page.histogram(&[("node", "1")], &histogram.snapshot(), MICROS);
        let text = page.finish();
        assert!(text.starts_with("# HELP kv_x_seconds X.\n# TYPE kv_x_seconds histogram\n"));
        assert!(
            text.contains("kv_x_seconds_bucket{node=\"1\",le=\"0.000004\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kv_x_seconds_bucket{node=\"1\",le=\"0.002048\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("kv_x_seconds_bucket{node=\"1\",le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("kv_x_seconds_sum{node=\"1\"} 0.001503\n"),
            "{text}"
        );
        assert!(
            text.ends_with("kv_x_seconds_count{node=\"1\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut page = Exposition::new();
        page.family("kv_y", Kind::Gauge, "Y.");
        page.sample(&[("why", "a \"b\"\\\nc")], 1);
        assert!(page
            .finish()
            .ends_with("kv_y{why=\"a \\\"b\\\"\\\\\\nc\"} 1\n"));
    }

    #[test]
    #[should_panic(expected = "end in _total")]
    fn a_counter_without_total_is_refused() {
        Exposition::new().family("kv_z", Kind::Counter, "Z.");
    }
}
