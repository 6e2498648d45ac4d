//! What operators and their tools read from a running node: `/metrics` as strict
//! Prometheus text whose figures move with traffic, INFO as Redis tooling parses it
//! (redis-py's `info()`, `redis-cli --stat`), and JSON logs.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{python_script, wait_for, Cluster, Shape};
use kv_server::config::Mode;

/// Hang guard for a condition the cluster reaches within a second or two.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The body of `GET path` on an admin endpoint.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the admin port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nhost: kv\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// A metric family as a page declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Family {
    kind: String,
    help: String,
}

/// A parsed, validated Prometheus text page: its families, and every sample's value by
/// `name{labels}` (labels sorted, so lookups do not depend on the page's order).
#[derive(Debug, Default)]
struct Page {
    families: BTreeMap<String, Family>,
    samples: BTreeMap<String, f64>,
}

impl Page {
    /// The value of sample `name` with exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&key(name, &labels)).copied()
    }

    /// The sum of every sample called `name`, whatever its labels.
    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .map(|(_, v)| v)
            .sum()
    }
}

fn key(name: &str, labels: &[(String, String)]) -> String {
    let mut labels = labels.to_vec();
    labels.sort();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|_| format!("value {text:?} is not a float")),
    }
}

/// A sample line's name, labels and value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses `name{a="x",b="y"} value` (labels optional, no timestamp).
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            let start = match chars.peek() {
                Some((_, '}')) => {
                    let (i, _) = chars.next().expect("peeked");
                    rest = &after[i + 1..];
                    break;
                }
                Some((i, _)) => *i,
                None => return Err(format!("unterminated labels in {line:?}")),
            };
            let eq = after[start..]
                .find('=')
                .ok_or_else(|| format!("label without '=' in {line:?}"))?;
            let label = &after[start..start + eq];
            if !is_label_name(label) {
                return Err(format!("bad label name {label:?} in {line:?}"));
            }
            for _ in 0..=eq {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label value not quoted in {line:?}"));
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape {other:?} in {line:?}")),
                    },
                    Some('\n') | None => return Err(format!("unterminated value in {line:?}")),
                    Some(c) => value.push(c),
                }
            }
            if labels.iter().any(|(l, _)| l == label) {
                return Err(format!("label {label} repeated in {line:?}"));
            }
            labels.push((label.to_string(), value));
            match chars.peek().map(|(_, c)| *c) {
                Some(',') => {
                    chars.next();
                }
                Some('}') => {}
                _ => return Err(format!("expected ',' or '}}' in {line:?}")),
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value in {line:?}"))?;
    if value.contains(' ') {
        return Err(format!(
            "unexpected timestamp or text after the value in {line:?}"
        ));
    }
    Ok((name.to_string(), labels, parse_value(value)?))
}

/// One histogram series's samples, keyed by its labels other than `le`.
#[derive(Default)]
struct Series {
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
}

/// Checks `text` against the Prometheus text format (0.0.4) as strictly as a scraper
/// with the conventions this project promises: every sample's family has one `# HELP`
/// and one `# TYPE` line before its samples, and its samples are contiguous; names and
/// labels are well-formed; no sample repeats; counters end in `_total` and are not
/// negative; histograms have `_bucket` samples with `le`, ascending and cumulative,
/// ending at `+Inf` equal to `_count`, and a `_sum`.
fn validate(text: &str) -> Result<Page, String> {
    if !text.ends_with('\n') {
        return Err("the page does not end with a newline".into());
    }
    let mut page = Page::default();
    let mut current: Option<String> = None;
    let mut helped: Option<String> = None;
    let mut histograms: BTreeMap<(String, String), Series> = BTreeMap::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let (keyword, name, rest) = (
                words.next().unwrap_or(""),
                words.next().unwrap_or(""),
                words.next().unwrap_or(""),
            );
            if !is_metric_name(name) {
                return Err(format!("bad metric name in {line:?}"));
            }
            match keyword {
                "HELP" => {
                    if page.families.contains_key(name) || helped.as_deref() == Some(name) {
                        return Err(format!("family {name} declared twice"));
                    }
                    if rest.trim().is_empty() {
                        return Err(format!("empty help for {name}"));
                    }
                    helped = Some(name.to_string());
                    page.families.insert(
                        name.to_string(),
                        Family {
                            kind: String::new(),
                            help: rest.to_string(),
                        },
                    );
                }
                "TYPE" => {
                    if helped.as_deref() != Some(name) {
                        return Err(format!("TYPE of {name} without its HELP just before"));
                    }
                    if !["counter", "gauge", "histogram"].contains(&rest) {
                        return Err(format!("unexpected type {rest:?} of {name}"));
                    }
                    if (rest == "counter") != name.ends_with("_total") {
                        return Err(format!("{name}: counters and only counters end in _total"));
                    }
                    page.families.get_mut(name).expect("helped").kind = rest.to_string();
                    helped = None;
                    current = Some(name.to_string());
                }
                _ => return Err(format!("unexpected comment {line:?}")),
            }
            continue;
        }
        if line.is_empty() {
            return Err("empty line".into());
        }
        let (name, labels, value) = parse_sample(line)?;
        let family = current
            .clone()
            .ok_or_else(|| format!("sample before any TYPE: {line:?}"))?;
        let kind = page.families[&family].kind.clone();
        let sample_key = key(&name, &labels);
        if page.samples.insert(sample_key, value).is_some() {
            return Err(format!("sample repeated: {line:?}"));
        }
        if kind == "histogram" {
            let suffix = name.strip_prefix(family.as_str()).unwrap_or("?");
            let le = labels
                .iter()
                .find(|(l, _)| l == "le")
                .map(|(_, v)| v.clone());
            let others: Vec<(String, String)> =
                labels.iter().filter(|(l, _)| l != "le").cloned().collect();
            let series = histograms
                .entry((family.clone(), key("", &others)))
                .or_default();
            match (suffix, le) {
                ("_bucket", Some(le)) => series.buckets.push((parse_value(&le)?, value)),
                ("_sum", None) => series.sum = Some(value),
                ("_count", None) => series.count = Some(value),
                _ => return Err(format!("{line:?} is not a sample of histogram {family}")),
            }
        } else {
            if name != family {
                return Err(format!("{line:?} is not a sample of {kind} {family}"));
            }
            if kind == "counter" && (value.is_nan() || value < 0.0) {
                return Err(format!("negative counter: {line:?}"));
            }
        }
    }
    if let Some(name) = helped {
        return Err(format!("HELP of {name} without a TYPE"));
    }
    for ((family, labels), series) in &histograms {
        let what = format!("histogram {family}{labels}");
        if series.buckets.is_empty() {
            return Err(format!("{what} has no buckets"));
        }
        for pair in series.buckets.windows(2) {
            if pair[0].0.partial_cmp(&pair[1].0) != Some(std::cmp::Ordering::Less) {
                return Err(format!("{what}: bucket bounds not ascending"));
            }
            if pair[0].1 > pair[1].1 {
                return Err(format!("{what}: buckets not cumulative"));
            }
        }
        let (last_bound, last_count) = *series.buckets.last().expect("not empty");
        if last_bound != f64::INFINITY {
            return Err(format!("{what}: the last bucket is not +Inf"));
        }
        match (series.count, series.sum) {
            (Some(count), Some(_)) if count == last_count => {}
            (Some(count), Some(_)) => {
                return Err(format!("{what}: +Inf bucket {last_count} != count {count}"))
            }
            _ => return Err(format!("{what}: _sum or _count missing")),
        }
    }
    Ok(page)
}

#[test]
fn the_validator_refuses_pages_that_break_the_format() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{node=\"0\"} 1\n\
                # HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n\
                h_sum 3\nh_count 2\n";
    let page = validate(good).expect("a valid page");
    assert_eq!(page.value("a_total", &[("node", "0")]), Some(1.0));
    assert_eq!(page.families["h"].kind, "histogram");
    let bad = [
        ("a_total 1\n", "sample before any TYPE"),
        ("# TYPE a_total counter\na_total 1\n", "without its HELP"),
        ("# HELP a A.\n# TYPE a counter\na 1\n", "end in _total"),
        ("# HELP a_total A.\n# TYPE a_total gauge\na_total 1\n", "end in _total"),
        ("# HELP a A.\n# TYPE a gauge\na 3.1.4\n", "not a float"),
        ("# HELP a A.\n# TYPE a gauge\na{b=c} 1\n", "not quoted"),
        ("# HELP a A.\n# TYPE a gauge\na{1b=\"c\"} 1\n", "bad label name"),
        ("# HELP a A.\n# TYPE a gauge\na 1\na 2\n", "repeated"),
        ("# HELP a A.\n# TYPE a gauge\nb 1\n", "not a sample of gauge a"),
        (
            "# HELP a A.\n# TYPE a gauge\na 1\n# HELP a A.\n# TYPE a gauge\n",
            "declared twice",
        ),
        (
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            "not cumulative",
        ),
        (
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
            "not +Inf",
        ),
        (
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
            "!= count",
        ),
        ("# HELP a A.\n# TYPE a gauge\na 1", "newline"),
    ];
    for (text, why) in bad {
        let error = validate(text).expect_err(text);
        assert!(error.contains(why), "{text:?}: {error} (expected {why:?})");
    }
}

/// Families every node's page has.
const REQUIRED: [(&str, &str); 14] = [
    ("kv_request_duration_seconds", "histogram"),
    ("kv_request_errors_total", "counter"),
    ("kv_fsync_duration_seconds", "histogram"),
    ("kv_fsync_batch_size", "histogram"),
    ("kv_shard_handoff_duration_seconds", "histogram"),
    ("kv_leader_changes_total", "counter"),
    ("kv_proposals_decided_total", "counter"),
    ("kv_proposals_failed_total", "counter"),
    ("kv_paxos_ballot_round", "gauge"),
    ("kv_role", "gauge"),
    ("kv_fsyncs_total", "counter"),
    ("kv_wal_bytes", "gauge"),
    ("kv_keys", "gauge"),
    ("kv_ready", "gauge"),
];

/// Node `id`'s page, validated.
fn scrape(cluster: &Cluster, id: u32) -> Page {
    let text = http_get(cluster.node(id).admin, "/metrics");
    validate(&text).unwrap_or_else(|e| panic!("node {id}'s /metrics is invalid: {e}\n{text}"))
}

#[test]
fn metrics_are_valid_prometheus_text_and_move_with_traffic() {
    let cluster = Cluster::start(3);
    let before: Vec<Page> = (0..3).map(|id| scrape(&cluster, id)).collect();
    for (id, page) in before.iter().enumerate() {
        for (family, kind) in REQUIRED {
            let declared = page.families.get(family);
            assert_eq!(
                declared.map(|f| f.kind.as_str()),
                Some(kind),
                "node {id}: {family}"
            );
        }
        let node = id.to_string();
        let roles: f64 = ["leader", "follower", "verifying", "recovering", "halted"]
            .iter()
            .map(|role| {
                page.value("kv_role", &[("node", &node), ("role", role)])
                    .unwrap_or_else(|| panic!("node {id}: kv_role for {role}"))
            })
            .sum();
        assert_eq!(roles, 1.0, "node {id} is in exactly one role");
    }

    let mut con = cluster.redis(0, SETTLE_TIMEOUT);
    const SETS: u64 = 30;
    for i in 0..SETS {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut con)
            .expect("SET");
    }
    let found: Option<String> = redis::cmd("GET").arg("k1").query(&mut con).expect("GET");
    assert_eq!(found.as_deref(), Some("1"));
    let error = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("NX")
        .query::<()>(&mut con)
        .expect_err("SET NX is refused");
    assert!(error.to_string().contains("not supported"), "{error}");

    let after = scrape(&cluster, 0);
    let resp = |page: &Page, name: &str, command: &str| {
        page.value(
            name,
            &[("node", "0"), ("protocol", "resp"), ("command", command)],
        )
        .unwrap_or_else(|| panic!("{name} for {command}"))
    };
    let sets = resp(&after, "kv_request_duration_seconds_count", "set")
        - resp(&before[0], "kv_request_duration_seconds_count", "set");
    assert!(sets >= SETS as f64, "SETs counted: {sets}");
    assert!(resp(&after, "kv_request_duration_seconds_sum", "set") > 0.0);
    assert!(resp(&after, "kv_request_duration_seconds_count", "get") >= 1.0);
    assert_eq!(
        after.value("kv_keyspace_hits_total", &[("node", "0")]),
        Some(1.0)
    );
    let fsyncs = after
        .value("kv_fsync_duration_seconds_count", &[("node", "0")])
        .expect("fsync histogram");
    assert!(fsyncs > 0.0, "fsyncs were timed");
    assert!(after.value("kv_fsync_duration_seconds_sum", &[("node", "0")]) > Some(0.0));
    assert!(after.value("kv_fsync_batch_size_count", &[("node", "0")]) > Some(0.0));
    assert!(
        after.value("kv_fsync_batch_size_sum", &[("node", "0")])
            >= after.value("kv_fsync_batch_size_count", &[("node", "0")]),
        "a batch holds at least one step"
    );
    assert!(after.value("kv_keys", &[("node", "0")]) >= Some(SETS as f64));

    // The cluster as a whole decided the writes and saw a leader elected.
    let pages: Vec<Page> = (0..3).map(|id| scrape(&cluster, id)).collect();
    let total = |name: &str| pages.iter().map(|p| p.sum(name)).sum::<f64>();
    assert!(
        total("kv_proposals_decided_total") >= 1.0,
        "proposals decided"
    );
    assert!(
        total("kv_leader_changes_total") >= 3.0,
        "each node learned a leader"
    );
    let leaders: f64 = pages
        .iter()
        .enumerate()
        .map(|(id, p)| {
            p.value("kv_role", &[("node", &id.to_string()), ("role", "leader")])
                .expect("kv_role")
        })
        .sum();
    assert!(leaders <= 1.0, "at most one leader: {leaders}");
}

#[test]
fn a_sharded_nodes_metrics_label_each_group_and_stay_valid() {
    let cluster = Cluster::start_sharded(
        3,
        Shape {
            replicas: 3,
            groups: 2,
            shards: 4,
            redis_cluster: false,
            mode: Mode::Paxos,
        },
    );
    let mut con = cluster.redis(0, SETTLE_TIMEOUT);
    for i in 0..20 {
        let _: () = redis::cmd("SET")
            .arg(format!("s{i}"))
            .arg(i)
            .query(&mut con)
            .expect("SET");
    }
    let page = scrape(&cluster, 0);
    let groups: Vec<String> = page
        .samples
        .keys()
        .filter(|k| k.starts_with("kv_ready{"))
        .cloned()
        .collect();
    assert!(
        groups.iter().any(|k| k.contains("group=\"master\"")),
        "{groups:?}"
    );
    assert!(
        groups.iter().filter(|k| !k.contains("master")).count() >= 2,
        "every group's replica is labelled: {groups:?}"
    );
    // Each group's replica on node 0 reports its own keys; together they hold every key.
    wait_for("node 0's groups to hold every key", SETTLE_TIMEOUT, || {
        (scrape(&cluster, 0).sum("kv_keys") >= 20.0).then_some(())
    });

    // Shard 0 moves to group 101, then back to 100 once that move settled (a shard that
    // leaves and comes back between two looks is not seen): at least one of the two is a
    // handoff, which every node (each hosts a replica of both groups) times.
    let handoffs = |id: u32| scrape(&cluster, id).sum("kv_shard_handoff_duration_seconds_count");
    let before: Vec<f64> = (0..3).map(handoffs).collect();
    let mut moved = false;
    for gid in ["101", "100"] {
        if let Ok(out) = cluster.admin(&["move", "0", gid]) {
            cluster.wait_settled(common::config_num(&out), SETTLE_TIMEOUT);
            moved = true;
        }
    }
    assert!(moved, "a move was accepted");
    for (id, before) in before.iter().enumerate() {
        wait_for("the handoff to be timed", SETTLE_TIMEOUT, || {
            (handoffs(id as u32) > *before).then_some(())
        });
    }
}

#[test]
fn info_sections_parse_in_redis_py_as_redis_tooling_expects() {
    let cluster = Cluster::start(1);
    let port = cluster.node(0).resp.port();
    let out = python_script("redis_info.py", &[&port.to_string()]);
    assert!(out.contains("info ok"), "{out}");
}

#[test]
fn redis_cli_stat_reports_against_a_node() {
    let cluster = Cluster::start(1);
    let port = cluster.node(0).resp.port();
    let mut con = cluster.redis(0, SETTLE_TIMEOUT);
    let _: () = redis::cmd("SET")
        .arg("a")
        .arg("1")
        .query(&mut con)
        .expect("SET");
    let mut stat = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--stat", "-i", "0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli is installed (Debian package redis-tools)");
    let mut lines = BufReader::new(stat.stdout.take().expect("stdout")).lines();
    // A header, then a line per interval: keys, memory, clients, blocked, requests,
    // connections.
    let mut read = Vec::new();
    while read.len() < 4 {
        match lines.next() {
            Some(Ok(line)) => read.push(line),
            _ => break,
        }
    }
    stat.kill().expect("stop redis-cli");
    let mut stderr = String::new();
    let _ = stat
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    let _ = stat.wait();
    assert!(
        read.len() == 4,
        "redis-cli --stat printed {read:?}; stderr: {stderr}"
    );
    assert!(!stderr.contains("ERR"), "{stderr}");
    let header = read
        .iter()
        .position(|l| l.contains("keys") && l.contains("requests"))
        .unwrap_or_else(|| panic!("no header in {read:?}"));
    let row = read
        .get(header + 1)
        .unwrap_or_else(|| panic!("no row after the header in {read:?}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns.first(), Some(&"1"), "one key: {row}");
    assert!(columns.len() >= 6, "{row}");
}

#[test]
fn a_node_started_with_json_log_format_writes_one_json_object_a_line() {
    let cluster = Cluster::start_with(
        1,
        Box::new(|_, command| {
            command.args(["--log-format", "json"]);
        }),
    );
    let log = wait_for("the node to log its start", SETTLE_TIMEOUT, || {
        let log = cluster.full_log(0);
        log.contains("node started").then_some(log)
    });
    let mut started = false;
    for line in log.lines().filter(|l| !l.is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        for field in ["timestamp", "level", "target", "fields"] {
            assert!(value.get(field).is_some(), "no {field} in {line}");
        }
        if value["fields"]["message"] == "node started" {
            started = true;
            assert_eq!(value["level"], "INFO", "{line}");
            assert_eq!(value["fields"]["node"], 0, "{line}");
        }
    }
    assert!(started, "the start line is among them:\n{log}");
}

/// A scraper may add query parameters (Prometheus's `params:`, a cache buster): the path
/// is what is served, as any HTTP server reads a request target.
#[test]
fn admin_paths_are_served_whatever_query_string_follows_them() {
    let cluster = Cluster::start(1);
    let admin = cluster.node(0).admin;
    let text = http_get(admin, "/metrics?format=prometheus&x=1");
    validate(&text).unwrap_or_else(|e| panic!("/metrics? is invalid: {e}\n{text}"));
    assert_eq!(http_get(admin, "/readyz?verbose"), "ready\n");
    assert_eq!(http_get(admin, "/livez?"), "ok\n");
}
