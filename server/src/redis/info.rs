//! INFO: the sections and fields Redis tooling reads (`redis-cli --stat`, exporters),
//! filled from the node's status, the process's command statistics and `/proc`.

use super::*;

/// INFO's sections, in Redis's order, and whether the default (argument-less) INFO
/// includes each. `all` is every section; `everything` the same (kv has no modules).
const INFO_SECTIONS: [(&str, bool); 12] = [
    ("server", true),
    ("clients", true),
    ("memory", true),
    ("persistence", true),
    ("stats", true),
    ("replication", true),
    ("cpu", true),
    ("modules", true),
    ("errorstats", true),
    ("cluster", true),
    ("keyspace", true),
    ("commandstats", false),
];

/// The sections INFO's arguments ask for, in Redis's order: none means `default`; `all`,
/// `everything` and `default` name groups; an unknown name adds nothing.
fn info_sections(asked: &[String]) -> Vec<&'static str> {
    let wanted = |name: &str, default: bool| {
        if asked.is_empty() {
            return default;
        }
        asked.iter().any(|a| match a.as_str() {
            "all" | "everything" => true,
            "default" => default,
            other => other == name,
        })
    };
    INFO_SECTIONS
        .iter()
        .filter(|(name, default)| wanted(name, *default))
        .map(|(name, _)| *name)
        .collect()
}

/// INFO's reply: the sections asked for, as Redis writes them (`# Name` headings, then
/// `field:value` lines), with the fields Redis tooling reads. Where kv differs from Redis
/// the nearest truthful figure is given (see the README's observability section).
pub(super) async fn info<S: Store>(session: &mut Session<S>, asked: &[String]) -> Frame {
    let status = session.store.status().await.unwrap_or_default();
    let sections = info_sections(asked);
    // A sharded node counts its keys by asking the groups: only when the section is shown.
    let keys = if sections.contains(&"keyspace") {
        match session.store.key_count().await {
            Ok(keys) => keys,
            Err(failure) => return failure_frame(&failure),
        }
    } else {
        0
    };
    let mut text = String::new();
    for name in sections {
        let fields = info_section(name, session, &status, keys);
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        let mut heading: Vec<char> = name.chars().collect();
        heading[0] = heading[0].to_ascii_uppercase();
        text.push_str(&format!(
            "# {}\r\n",
            heading.into_iter().collect::<String>()
        ));
        for (field, value) in fields {
            text.push_str(&format!("{field}:{value}\r\n"));
        }
    }
    Frame::Bulk(Bytes::from(text))
}

/// One INFO section's fields.
fn info_section<S: Store>(
    name: &str,
    session: &Session<S>,
    status: &crate::node::Status,
    keys: u64,
) -> Vec<(String, String)> {
    let core = |field: &str| {
        status
            .core
            .iter()
            .find(|(name, _)| *name == field)
            .map(|(_, value)| value.clone())
    };
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut add = |field: &str, value: String| fields.push((field.to_string(), value));
    match name {
        "server" => {
            let cluster = session.store.cluster().is_some();
            let uptime = PROCESS.uptime().as_secs();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            add("redis_version", "7.0.0".into());
            add("redis_git_sha1", "00000000".into());
            add("redis_git_dirty", "0".into());
            add(
                "redis_mode",
                if cluster { "cluster" } else { "standalone" }.into(),
            );
            add("os", os_name());
            add("arch_bits", usize::BITS.to_string());
            add("multiplexing_api", "epoll".into());
            add("process_id", std::process::id().to_string());
            add("run_id", run_id());
            add("tcp_port", session.port.to_string());
            add("server_time_usec", now.as_micros().to_string());
            add("uptime_in_seconds", uptime.to_string());
            add("uptime_in_days", (uptime / 86_400).to_string());
            add(
                "executable",
                std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            );
            add("kv_version", env!("CARGO_PKG_VERSION").into());
        }
        "clients" => {
            add("connected_clients", session.connected.get().to_string());
            add("cluster_connections", "0".into());
            add("blocked_clients", "0".into());
            add("tracking_clients", "0".into());
        }
        "memory" => {
            let (rss, peak) = process_memory();
            for (field, bytes) in [
                ("used_memory", rss),
                ("used_memory_rss", rss),
                ("used_memory_peak", peak),
            ] {
                add(field, bytes.to_string());
                add(&format!("{field}_human"), human_bytes(bytes));
            }
            add("maxmemory", "0".into());
            add("maxmemory_human", "0B".into());
            add("maxmemory_policy", "noeviction".into());
            add("mem_allocator", "libc".into());
            add(
                "kv_live_bytes",
                core("live_bytes").unwrap_or_else(|| "0".into()),
            );
        }
        "persistence" => {
            let write_status = if status.storage_failed.is_some() {
                "err"
            } else {
                "ok"
            };
            let started = std::time::SystemTime::now()
                .checked_sub(PROCESS.uptime())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .unwrap_or_default();
            add("loading", u8::from(!status.ready).to_string());
            add("async_loading", "0".into());
            add(
                "rdb_changes_since_last_save",
                status
                    .durable_index
                    .saturating_sub(status.snapshot_index)
                    .to_string(),
            );
            add("rdb_bgsave_in_progress", "0".into());
            add("rdb_last_save_time", started.as_secs().to_string());
            add("rdb_last_bgsave_status", write_status.into());
            add("rdb_last_bgsave_time_sec", "-1".into());
            add("rdb_current_bgsave_time_sec", "-1".into());
            add("aof_enabled", "1".into());
            add("aof_rewrite_in_progress", "0".into());
            add("aof_rewrite_scheduled", "0".into());
            add("aof_last_rewrite_time_sec", "-1".into());
            add("aof_current_rewrite_time_sec", "-1".into());
            add("aof_last_bgrewrite_status", "ok".into());
            add("aof_last_write_status", write_status.into());
            add("aof_current_size", status.wal_bytes.to_string());
            add("kv_wal_bytes", status.wal_bytes.to_string());
            add("kv_snapshot_bytes", status.snapshot_bytes.to_string());
            add("kv_snapshot_index", status.snapshot_index.to_string());
            add("kv_durable_index", status.durable_index.to_string());
        }
        "stats" => {
            let errors: u64 = PROCESS
                .resp
                .iter()
                .map(|c| c.rejected.load(Ordering::Relaxed) + c.failed.load(Ordering::Relaxed))
                .sum();
            add(
                "total_connections_received",
                PROCESS.resp_connections.load(Ordering::Relaxed).to_string(),
            );
            add(
                "total_commands_processed",
                PROCESS.resp_commands_processed().to_string(),
            );
            add(
                "instantaneous_ops_per_sec",
                format!("{:.0}", PROCESS.ops_per_sec()),
            );
            add("rejected_connections", "0".into());
            add("expired_keys", "0".into());
            add("evicted_keys", "0".into());
            add(
                "keyspace_hits",
                PROCESS.keyspace_hits.load(Ordering::Relaxed).to_string(),
            );
            add(
                "keyspace_misses",
                PROCESS.keyspace_misses.load(Ordering::Relaxed).to_string(),
            );
            add("pubsub_channels", "0".into());
            add("pubsub_patterns", "0".into());
            add("total_error_replies", errors.to_string());
            add("kv_fsyncs", status.fsyncs.to_string());
        }
        "replication" => {
            // Every node takes writes (a follower forwards them to its group's leader), so
            // to Redis tooling each is a master without replicas of its own; the Paxos role
            // is `kv_role`.
            add("role", "master".into());
            add("connected_slaves", "0".into());
            add("master_failover_state", "no-failover".into());
            add("master_repl_offset", status.durable_index.to_string());
            if let Some(role) = core("role") {
                add("kv_role", role);
            }
            for field in [
                "ballot_round",
                "decided_index",
                "applied_index",
                "leader_changes",
            ] {
                if let Some(value) = core(field) {
                    add(&format!("kv_{field}"), value);
                }
            }
        }
        "cpu" => {
            let (user, system) = cpu_seconds();
            add("used_cpu_sys", format!("{system:.6}"));
            add("used_cpu_user", format!("{user:.6}"));
        }
        "cluster" => {
            add(
                "cluster_enabled",
                u8::from(session.store.cluster().is_some()).to_string(),
            );
        }
        "keyspace" if keys > 0 => {
            add("db0", format!("keys={keys},expires=0,avg_ttl=0"));
        }
        "commandstats" => {
            for (command, stats) in crate::metrics::RESP_COMMANDS.iter().zip(&PROCESS.resp) {
                let latency = stats.latency_micros.snapshot();
                let (calls, usec) = (latency.count(), latency.sum);
                let rejected = stats.rejected.load(Ordering::Relaxed);
                if calls == 0 && rejected == 0 {
                    continue;
                }
                let per_call = if calls == 0 {
                    0.0
                } else {
                    usec as f64 / calls as f64
                };
                add(
                    &format!("cmdstat_{command}"),
                    format!(
                        "calls={calls},usec={usec},usec_per_call={per_call:.2},rejected_calls={rejected},failed_calls={}",
                        stats.failed.load(Ordering::Relaxed)
                    ),
                );
            }
        }
        // `modules` and `errorstats`: kv has no modules, and counts errors by command.
        _ => {}
    }
    fields
}

/// The kernel's name, release and machine, as Redis's `os` field shows them.
fn os_name() -> String {
    // SAFETY: `uname` fills the struct it is given; a zeroed `utsname` is a valid value
    // (all byte arrays), and the fields are NUL-terminated by the kernel.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return format!("{} {}", std::env::consts::OS, std::env::consts::ARCH);
    }
    let field = |chars: &[libc::c_char]| {
        let bytes: Vec<u8> = chars
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!(
        "{} {} {}",
        field(&uts.sysname),
        field(&uts.release),
        field(&uts.machine)
    )
}

/// A random 40-hex-digit id for this process (Redis's `run_id`).
fn run_id() -> String {
    static RUN_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN_ID
        .get_or_init(|| {
            let state = RandomState::new();
            (0..3u64)
                .map(|i| format!("{:016x}", state.hash_one(i)))
                .collect::<String>()[..40]
                .to_string()
        })
        .clone()
}

/// The process's resident memory now and at its peak, in bytes (from `/proc/self/status`;
/// zero where that does not exist).
fn process_memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
            * 1024
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// CPU seconds the process has used, `(user, system)`.
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: `getrusage` fills the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return (0.0, 0.0);
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (seconds(usage.ru_utime), seconds(usage.ru_stime))
}

/// Bytes as Redis's `_human` fields write them (`1.50M`).
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_sections_are_chosen_as_redis_chooses_them() {
        let asked = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            info_sections(&args)
        };
        let default = asked(&[]);
        assert_eq!(default.first(), Some(&"server"));
        assert!(default.contains(&"keyspace") && !default.contains(&"commandstats"));
        assert_eq!(asked(&["default"]), default);
        assert_eq!(asked(&["all"]).len(), INFO_SECTIONS.len());
        assert_eq!(asked(&["everything"]), asked(&["all"]));
        assert_eq!(asked(&["commandstats"]), vec!["commandstats"]);
        assert_eq!(
            asked(&["keyspace", "server"]),
            vec!["server", "keyspace"],
            "in Redis's order, whatever the order asked"
        );
        assert!(asked(&["nosuch"]).is_empty());
    }

    #[test]
    fn sizes_read_as_redis_writes_them() {
        assert_eq!(human_bytes(1000), "1000B");
        assert_eq!(human_bytes(1536), "1.50K");
        assert_eq!(human_bytes(3 << 20), "3.00M");
    }
}
