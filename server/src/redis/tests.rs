use super::*;

#[test]
fn hello_answers_with_a_map_in_resp3_and_a_flat_array_in_resp2() {
    let mut resp3 = BytesMut::new();
    hello(Protocol::Resp3, 7, false).write_as(Protocol::Resp3, &mut resp3);
    assert!(resp3.starts_with(b"%7\r\n$6\r\nserver\r\n"), "{resp3:?}");
    let text = String::from_utf8_lossy(&resp3);
    assert!(text.contains("$5\r\nproto\r\n:3\r\n"), "{text}");
    let mut resp2 = BytesMut::new();
    hello(Protocol::Resp2, 7, false).write_as(Protocol::Resp2, &mut resp2);
    assert!(resp2.starts_with(b"*14\r\n"), "{resp2:?}");
    assert!(String::from_utf8_lossy(&resp2).contains("$5\r\nproto\r\n:2\r\n"));
}

#[test]
fn output_past_the_hard_limit_is_refused_and_the_soft_limit_asks_for_a_write() {
    let limits = OutputLimits {
        soft_bytes: 16,
        hard_bytes: 40,
    };
    let mut output = Output::new(limits);
    let value = Frame::Bulk(Bytes::from_static(b"0123456789")); // 17 bytes encoded
    output.push(&Frame::Integer(1), Protocol::Resp2).unwrap();
    assert!(!output.over_soft_limit());
    output.push(&value, Protocol::Resp2).unwrap();
    assert!(output.over_soft_limit());
    output.push(&value, Protocol::Resp2).unwrap();
    assert_eq!(
        output.push(&value, Protocol::Resp2),
        Err(OutputOverflow(4 + 3 * 17))
    );
    output.written();
    assert!(!output.over_soft_limit());
    output.push(&value, Protocol::Resp2).unwrap();
}

#[test]
fn every_command_has_its_stats() {
    let samples: [&[&str]; 26] = [
        &["GET", "k"],
        &["SET", "k", "v"],
        &["APPEND", "k", "v"],
        &["DEL", "k"],
        &["UNLINK", "k"],
        &["EXISTS", "k"],
        &["MGET", "k"],
        &["PING"],
        &["ECHO", "m"],
        &["INFO"],
        &["QUIT"],
        &["SELECT", "0"],
        &["DBSIZE"],
        &["SCAN", "0"],
        &["KEYS", "*"],
        &["COMMAND"],
        &["CLUSTER", "INFO"],
        &["ASKING"],
        &["READWRITE"],
        &["HELLO"],
        &["AUTH", "pw"],
        &["CLIENT", "SETNAME", "x"],
        &["CONFIG", "GET", "x"],
        &["MULTI"],
        &["EXEC"],
        &["DISCARD"],
    ];
    let mut names = std::collections::BTreeSet::new();
    for args in samples {
        let frame = Frame::Array(
            args.iter()
                .map(|a| Frame::Bulk(Bytes::copy_from_slice(a.as_bytes())))
                .collect(),
        );
        let command = Command::from_frame(frame).expect(args[0]);
        PROCESS.resp_command(command.name());
        names.insert(command.name());
    }
    assert_eq!(names.len(), crate::metrics::RESP_COMMANDS.len());
}

#[test]
fn failures_become_redis_error_replies() {
    let misconf = failure_frame(&Failure::StorageFailed("no space left on device".into()));
    assert!(
        matches!(&misconf, Frame::Error(m) if m.starts_with("MISCONF ") && m.contains("no space")),
        "{misconf:?}"
    );
    assert_eq!(
        failure_frame(&Failure::Stopping),
        Frame::Error("ERR node is stopping".into())
    );
}

#[test]
fn integers_are_read_as_redis_reads_them() {
    for yes in [
        "0",
        "1",
        "-1",
        "15",
        "9223372036854775807",
        "-9223372036854775808",
    ] {
        assert!(is_redis_integer(yes.as_bytes()), "{yes}");
    }
    for no in [
        "",
        "-",
        "-0",
        "00",
        "01",
        "+1",
        " 1",
        "1 ",
        "abc",
        "1.0",
        "9223372036854775808",
    ] {
        assert!(!is_redis_integer(no.as_bytes()), "{no}");
    }
}
