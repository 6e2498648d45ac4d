//! Issue 9, item 13, on real processes: commands a client pipelines go to the log in
//! batches, so 10,000 pipelined SETs and an MGET of 65,535 keys complete (they took ~8 s
//! and 38 s at one log round per command) — and every reply is the right one, in order,
//! whatever mix of commands the pipeline holds. No assertion here is about speed (the
//! figures are in the README); what is asserted is the number of log instances the
//! pipeline took, which one round per command would make one per command.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;

/// Hang guard for one pipeline or command.
const TIMEOUT: Duration = Duration::from_secs(120);
/// Pipelined SETs.
const SETS: usize = 10_000;
/// Keys in the MGET: as many as one RESP command can name.
const MGET_KEYS: usize = 65_535;
/// Log instances the pipelined SETs may take: a batch holds 1,024 writes, so about ten,
/// with room for no-ops and instances of whatever else the group does meanwhile. One
/// request per command took one instance per command (a connection has one request
/// outstanding, so no two of its commands could share an instance).
const SET_INSTANCES_MAX: u64 = 100;

/// The last log instance node `id` has applied (0 before the first: `-`).
fn applied(cluster: &Cluster, id: u32) -> u64 {
    let status = cluster.status_fields(id).expect("status");
    match status.get("applied_index") {
        "-" => 0,
        _ => status.u64("applied_index"),
    }
}

#[test]
fn ten_thousand_pipelined_sets_and_an_mget_of_65535_keys_complete_and_read_back() {
    let cluster = Cluster::start(3);
    // Through a node that does not lead, as often as not: batches are forwarded whole.
    let mut connection = cluster.redis(1, TIMEOUT);

    let mut pipe = redis::pipe();
    for i in 0..SETS {
        pipe.cmd("SET")
            .arg(format!("key-{i}"))
            .arg(format!("value-{i}"));
    }
    let before = applied(&cluster, 1);
    let started = Instant::now();
    let replies: Vec<String> = pipe.query(&mut connection).expect("pipelined SETs");
    eprintln!("{SETS} pipelined SETs: {:?}", started.elapsed());
    assert_eq!(replies.len(), SETS);
    assert!(replies.iter().all(|r| r == "OK"), "every SET answered OK");
    let instances = applied(&cluster, 1) - before;
    assert!(
        instances <= SET_INSTANCES_MAX,
        "{SETS} pipelined SETs took {instances} log instances"
    );

    let mut mget = redis::cmd("MGET");
    for i in 0..MGET_KEYS {
        mget.arg(format!("key-{i}"));
    }
    let before = applied(&cluster, 1);
    let started = Instant::now();
    let values: Vec<Option<String>> = mget.query(&mut connection).expect("MGET");
    eprintln!("MGET of {MGET_KEYS} keys: {:?}", started.elapsed());
    let instances = applied(&cluster, 1) - before;
    assert!(
        instances <= 10,
        "an MGET of {MGET_KEYS} keys took {instances} log instances"
    );
    assert_eq!(values.len(), MGET_KEYS);
    for (i, value) in values.iter().enumerate() {
        let expected = (i < SETS).then(|| format!("value-{i}"));
        assert_eq!(*value, expected, "key-{i}");
    }

    // Read back through another node, pipelined GETs this time.
    let mut other = cluster.redis(2, TIMEOUT);
    let mut pipe = redis::pipe();
    for i in (0..SETS).rev() {
        pipe.cmd("GET").arg(format!("key-{i}"));
    }
    let values: Vec<Option<String>> = pipe.query(&mut other).expect("pipelined GETs");
    for (n, value) in values.iter().enumerate() {
        let i = SETS - 1 - n;
        assert_eq!(value.as_deref(), Some(format!("value-{i}").as_str()));
    }
    cluster.assert_no_panic();
}

#[test]
fn a_mixed_pipeline_is_answered_in_order_with_each_command_seeing_the_ones_before_it() {
    /// More keys than one batch of writes holds, so the DEL spans batches.
    const DELETED: usize = 2_500;
    let cluster = Cluster::start(3);
    let mut connection = cluster.redis(0, TIMEOUT);

    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg("a").arg("1");
    pipe.cmd("GET").arg("a");
    pipe.cmd("APPEND").arg("a").arg("23");
    pipe.cmd("EXISTS").arg("a").arg("b").arg("a");
    pipe.cmd("PING");
    pipe.cmd("MGET").arg("a").arg("b");
    for i in 0..DELETED {
        pipe.cmd("SET").arg(format!("d-{i}")).arg("x");
    }
    pipe.cmd("SET").arg("b").arg("2");
    pipe.cmd("NOSUCHCOMMAND");
    let mut del = redis::cmd("DEL");
    for i in 0..DELETED {
        del.arg(format!("d-{i}"));
    }
    del.arg("never-set");
    pipe.add_command(del);
    pipe.cmd("MGET").arg("a").arg("b").arg("d-0");
    pipe.cmd("GET").arg("a");
    pipe.cmd("DBSIZE");

    let replies: Vec<redis::Value> = pipe
        .ignore_errors()
        .query(&mut connection)
        .expect("mixed pipeline");
    let texts: Vec<String> = replies.iter().map(text).collect();
    let mut expected: Vec<String> = ["OK", "1", "3", "2", "PONG", "[123,nil]"]
        .map(String::from)
        .to_vec();
    expected.extend((0..DELETED).map(|_| "OK".to_string()));
    expected.extend(
        [
            "OK",
            "ERR:ERR",
            &DELETED.to_string(),
            "[123,2,nil]",
            "123",
            "2",
        ]
        .map(String::from),
    );
    assert_eq!(texts.len(), expected.len());
    for (i, (got, want)) in texts.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "reply {i}");
    }
    cluster.assert_no_panic();
}

/// A reply as short text: `nil`, numbers, strings, `[a,b]`, `ERR:code`.
fn text(value: &redis::Value) -> String {
    match value {
        redis::Value::Nil => "nil".into(),
        redis::Value::Okay => "OK".into(),
        redis::Value::Int(n) => n.to_string(),
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Array(items) => {
            format!("[{}]", items.iter().map(text).collect::<Vec<_>>().join(","))
        }
        redis::Value::ServerError(e) => format!("ERR:{}", e.code()),
        other => format!("{other:?}"),
    }
}
