use super::*;

fn get(key: &[u8]) -> Op {
    Op::Get {
        key: Bytes::copy_from_slice(key),
    }
}

fn put(key: &[u8], value: &[u8]) -> Op {
    Op::Put {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
    }
}

fn append(key: &[u8], value: &[u8]) -> Op {
    Op::Append {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
    }
}

fn delete(key: &[u8]) -> Op {
    Op::Delete {
        key: Bytes::copy_from_slice(key),
    }
}

/// A key in the given shard: its first byte is `shard` itself.
fn key_in(shard: u32) -> Bytes {
    Bytes::from(vec![u8::try_from(shard).unwrap(), b'k'])
}

fn rebuild(kv: &KvState, budget: usize) -> Result<KvState> {
    let mut builder = KvImageBuilder::new();
    let mut cursor = None;
    loop {
        let mut piece = Vec::new();
        cursor = kv.encode_piece(cursor.as_ref(), budget, &mut piece);
        builder.add(&piece)?;
        if cursor.is_none() {
            return builder.finish();
        }
    }
}

#[test]
fn shard_of_is_first_byte_mod_shards_and_empty_key_is_shard_zero() {
    assert_eq!(shard_of(b""), ShardId(0));
    assert_eq!(shard_of(b"a"), ShardId(7));
    assert_eq!(shard_of(&[255, 1, 2]), ShardId(5));
    assert_eq!(shard_of(&[10]), ShardId(0));
    assert_eq!(ShardId::all().count(), SHARDS as usize);
}

#[test]
fn redis_cluster_slots_match_the_reference_vectors() {
    assert_eq!(crc16(b"123456789"), 0x31C3);
    assert_eq!(slot_of(b"foo"), 12182);
    assert_eq!(slot_of(b"somekey"), 11058);
    assert_eq!(slot_of(b"foo{hash_tag}"), 2515);
    assert_eq!(slot_of(b"bar{hash_tag}"), 2515);
    // An empty tag or no closing brace hashes the whole key.
    assert_eq!(
        slot_of(b"foo{}bar"),
        (u32::from(crc16(b"foo{}bar")) % SLOTS) as u16
    );
    assert_eq!(
        slot_of(b"foo{bar"),
        (u32::from(crc16(b"foo{bar")) % SLOTS) as u16
    );
}

#[test]
fn slot_shards_are_contiguous_ranges_covering_every_slot_once() {
    for shards in [1, 3, 10, 16, 1000, SLOTS] {
        let sharding = Sharding::Slots { shards };
        let mut next = 0u32;
        for shard in sharding.all() {
            let (first, last) = sharding.slots_of(shard).unwrap();
            assert_eq!(u32::from(first), next, "{shards} shards: shard {shard}");
            assert!(last >= first);
            for slot in [first, last] {
                assert_eq!(sharding.shard_of_slot(slot), shard);
            }
            next = u32::from(last) + 1;
        }
        assert_eq!(next, SLOTS, "{shards} shards cover every slot");
    }
    let sharding = Sharding::Slots { shards: 16 };
    assert_eq!(
        sharding.shard_of(b"foo{hash_tag}"),
        sharding.shard_of(b"bar{hash_tag}")
    );
    let mut kv = KvState::holding_all(sharding);
    kv.execute(&put(b"a{t}", b"1"));
    assert_eq!(kv.get(b"a{t}").map(|v| &v[..]), Some(&b"1"[..]));
    assert_eq!(kv.sharding(), sharding);
}

#[test]
fn get_of_missing_key_is_nil_and_put_then_get_reads_it() {
    let mut kv = KvState::new();
    assert_eq!(kv.execute(&get(b"x")), Reply::Value(None));
    assert_eq!(kv.execute(&put(b"x", b"1")), Reply::Ok);
    let value = Some(Bytes::from_static(b"1"));
    assert_eq!(kv.execute(&get(b"x")), Reply::Value(value));
}

#[test]
fn append_on_missing_key_creates_it_and_returns_new_length() {
    let mut kv = KvState::new();
    assert_eq!(kv.execute(&append(b"k", b"ab")), Reply::Appended(2));
    assert_eq!(kv.execute(&append(b"k", b"cde")), Reply::Appended(5));
    assert_eq!(kv.get(b"k").map(|v| &v[..]), Some(&b"abcde"[..]));
}

#[test]
fn append_copies_when_a_reply_or_a_frozen_copy_shares_the_value() {
    let mut kv = KvState::new();
    kv.execute(&put(b"k", b"ab"));
    let before = kv.execute(&get(b"k"));
    let frozen = kv.clone();
    kv.execute(&append(b"k", b"c"));
    assert_eq!(before, Reply::Value(Some(Bytes::from_static(b"ab"))));
    assert_eq!(frozen.get(b"k").map(|v| &v[..]), Some(&b"ab"[..]));
    assert_eq!(kv.get(b"k").map(|v| &v[..]), Some(&b"abc"[..]));
}

#[test]
fn a_write_past_the_value_limit_changes_nothing_and_says_how_long_it_would_be() {
    let mut kv = KvState::new();
    let max = vec![b'v'; VALUE_BYTES_MAX];
    assert_eq!(kv.execute(&put(b"k", &max)), Reply::Ok);
    let over = VALUE_BYTES_MAX as u64 + 1;
    assert_eq!(kv.execute(&append(b"k", b"x")), Reply::TooLarge(over));
    assert_eq!(
        kv.execute(&append(b"k", b"")),
        Reply::Appended(VALUE_BYTES_MAX as u64)
    );
    assert_eq!(
        kv.execute(&put(b"j", &[max.as_slice(), b"x"].concat())),
        Reply::TooLarge(over)
    );
    assert_eq!(
        kv.execute(&append(b"i", &[max.as_slice(), b"x"].concat())),
        Reply::TooLarge(over)
    );
    assert_eq!(kv.get(b"k").map(|v| v.len()), Some(VALUE_BYTES_MAX));
    assert_eq!((kv.get(b"j"), kv.get(b"i")), (None, None));
    assert_eq!(kv.live_bytes(), 1 + VALUE_BYTES_MAX as u64);
    // Up to the limit an append still grows the value.
    kv.execute(&put(b"k", &max[1..]));
    assert_eq!(
        kv.execute(&append(b"k", b"x")),
        Reply::Appended(VALUE_BYTES_MAX as u64)
    );
}

#[test]
fn delete_reports_whether_the_key_existed() {
    let mut kv = KvState::new();
    assert_eq!(kv.execute(&delete(b"k")), Reply::Deleted(false));
    kv.execute(&put(b"k", b"v"));
    assert_eq!(kv.execute(&delete(b"k")), Reply::Deleted(true));
    assert_eq!(kv.get(b"k"), None);
    assert!(kv.is_empty());
}

#[test]
fn an_operation_on_an_unheld_shard_is_refused_and_changes_nothing() {
    let mut kv = KvState::without_shards();
    assert_eq!(kv.execute(&put(b"a", b"v")), Reply::NotHeld(ShardId(7)));
    assert!(kv.is_empty());
    kv.create_shard(ShardId(7)).unwrap();
    assert_eq!(kv.execute(&put(b"a", b"v")), Reply::Ok);
    assert_eq!(kv.len(), 1);
}

#[test]
fn create_shard_refuses_held_and_out_of_range_shards() {
    let mut kv = KvState::new();
    assert!(matches!(
        kv.create_shard(ShardId(3)),
        Err(Error::Invalid(_))
    ));
    let mut empty = KvState::without_shards();
    assert!(matches!(
        empty.create_shard(ShardId(SHARDS)),
        Err(Error::Invalid(_))
    ));
    assert!(empty.create_shard(ShardId(3)).is_ok());
    assert_eq!(empty.held_shards().collect::<Vec<_>>(), vec![ShardId(3)]);
}

#[test]
fn live_bytes_and_len_track_put_overwrite_append_and_delete() {
    let mut kv = KvState::new();
    kv.execute(&put(b"ab", b"xyz"));
    assert_eq!((kv.live_bytes(), kv.len()), (5, 1));
    kv.execute(&put(b"ab", b"q"));
    assert_eq!((kv.live_bytes(), kv.len()), (3, 1));
    kv.execute(&append(b"ab", b"rs"));
    assert_eq!((kv.live_bytes(), kv.len()), (5, 1));
    kv.execute(&append(b"c", b""));
    assert_eq!((kv.live_bytes(), kv.len()), (6, 2));
    kv.execute(&delete(b"ab"));
    assert_eq!((kv.live_bytes(), kv.len()), (1, 1));
}

#[test]
fn export_import_moves_a_shard() {
    let mut from = KvState::new();
    let key = key_in(3);
    from.execute(&append(&key, b"v"));
    let data = from.export_shard(ShardId(3)).unwrap();
    assert_eq!(data.live_bytes(), 3);
    let mut to = KvState::without_shards();
    to.import_shard(data).unwrap();
    assert_eq!(to.get(&key), from.get(&key));
    assert_eq!(to.live_bytes(), 3);
    assert!(from.drop_shard(ShardId(3)));
    assert_eq!(from.execute(&get(&key)), Reply::NotHeld(ShardId(3)));
    assert!(from.export_shard(ShardId(3)).is_none());
}

#[test]
fn import_refuses_a_held_shard_or_misplaced_keys_and_changes_nothing() {
    let mut kv = KvState::new();
    kv.execute(&put(&[3], b"v"));
    let data = kv.export_shard(ShardId(3)).unwrap();
    let before = kv.clone();
    assert!(matches!(kv.import_shard(data), Err(Error::Invalid(_))));
    assert_eq!(kv, before);
    let mut entries = OrdMap::new();
    entries.insert(key_in(4), Bytes::from_static(b"v"));
    let mut empty = KvState::without_shards();
    let data = ShardData {
        shard: ShardId(3),
        entries,
    };
    assert!(matches!(empty.import_shard(data), Err(Error::Invalid(_))));
    assert!(!empty.holds(ShardId(3)));
}

#[test]
fn images_round_trip_piece_by_piece_and_are_deterministic() {
    let mut kv = KvState::without_shards();
    kv.create_shard(ShardId(7)).unwrap();
    kv.create_shard(ShardId(0)).unwrap();
    kv.create_shard(ShardId(4)).unwrap();
    for i in 0..500u32 {
        let key = [b'a', (i >> 8) as u8, i as u8];
        kv.execute(&put(&key, &vec![i as u8; (i % 40) as usize]));
        kv.execute(&append(&[10, i as u8], b"zz"));
    }
    for budget in [1, 100, 1 << 20] {
        let restored = rebuild(&kv, budget).unwrap();
        assert_eq!(restored, kv, "budget {budget}");
        assert_eq!(restored.image_bytes(), kv.image_bytes());
        assert_eq!(restored.live_bytes(), kv.live_bytes());
    }
    assert!(rebuild(&kv, 1).is_ok());
    // Small budgets give many pieces; an empty shard still comes back.
    assert!(kv.image_bytes().len() >= 4);
    assert!(rebuild(&KvState::new(), 10).unwrap().holds(ShardId(9)));
}

#[test]
fn image_building_refuses_garbage_misplaced_keys_disorder_and_missing_headers() {
    let entries = |shard: u32, keys: &[&[u8]]| {
        encode(&Piece::Entries {
            shard: ShardId(shard),
            entries: keys
                .iter()
                .map(|k| (Bytes::copy_from_slice(k), Bytes::new()))
                .collect(),
        })
        .unwrap()
    };
    let header = |shards: &[u32]| {
        encode(&Piece::Shards {
            sharding: Sharding::LAB,
            held: shards.iter().map(|&s| ShardId(s)).collect(),
        })
        .unwrap()
    };
    let mut b = KvImageBuilder::new();
    assert!(b.add(&[0xff, 0xff, 0xff]).is_err());
    assert!(
        b.add(&entries(3, &[&[3]])).is_err(),
        "entries before shards"
    );
    let mut b = KvImageBuilder::new();
    b.add(&header(&[3])).unwrap();
    assert!(b.add(&header(&[4])).is_err(), "a second header");
    assert!(b.add(&entries(3, &[&[4]])).is_err(), "misplaced key");
    assert!(b.add(&entries(5, &[&[5]])).is_err(), "unheld shard");
    b.add(&entries(3, &[&[3, 2]])).unwrap();
    assert!(b.add(&entries(3, &[&[3, 1]])).is_err(), "out of order");
    assert!(KvImageBuilder::new().finish().is_err());
    let mut b = KvImageBuilder::new();
    assert!(b.add(&header(&[3, 3])).is_err(), "a shard held twice");
}

#[test]
fn stored_values_do_not_share_the_callers_buffer() {
    let mut kv = KvState::new();
    let buffer = Bytes::from(vec![b'a'; 64]);
    let op = Op::Put {
        key: buffer.slice(0..1),
        value: buffer.slice(1..4),
    };
    kv.execute(&op);
    drop(op);
    // Only our handle remains on the caller's buffer, so it is unique again.
    assert!(buffer.try_into_mut().is_ok());
}

fn scan_page(kv: &KvState, scan: Scan) -> ScanPage {
    match kv.read(&Op::from(scan)) {
        Reply::Scanned(page) => page,
        other => panic!("a scan answered {other:?}"),
    }
}

fn keys_of(page: &ScanPage) -> Vec<&[u8]> {
    page.entries.iter().map(|e| &e.key[..]).collect()
}

#[test]
fn a_scan_reads_one_shard_in_key_order_from_its_resume_point() {
    let mut kv = KvState::new();
    for key in [&b"a3"[..], b"a1", b"a2", b"b1"] {
        kv.execute(&put(key, b"value"));
    }
    let shard = shard_of(b"a");
    let first = scan_page(&kv, Scan::shard(shard, 2));
    assert_eq!(keys_of(&first), [&b"a1"[..], b"a2"]);
    assert_eq!(first.examined, 2);
    assert_eq!(first.next.as_deref(), Some(&b"a2"[..]));
    assert_eq!(first.entries[0].value_bytes, 5);
    assert_eq!(first.entries[0].value, None, "values only when asked");
    let rest = scan_page(
        &kv,
        Scan {
            after: first.next,
            values: true,
            ..Scan::shard(shard, 2)
        },
    );
    assert_eq!(keys_of(&rest), [&b"a3"[..]]);
    assert_eq!(rest.entries[0].value.as_deref(), Some(&b"value"[..]));
    assert_eq!(rest.next, None, "the shard is done");
    assert_eq!(
        kv.read(&Op::from(Scan::shard(ShardId(SHARDS), 10))),
        Reply::NotHeld(ShardId(SHARDS))
    );
    let without = KvState::without_shards();
    assert_eq!(
        without.read(&Op::from(Scan::shard(shard, 10))),
        Reply::NotHeld(shard)
    );
}

#[test]
fn a_pattern_filters_and_its_literal_prefix_bounds_the_range_read() {
    let mut kv = KvState::new();
    for key in [&b"a"[..], b"ab", b"ac", b"abc", b"ax", b"az"] {
        kv.execute(&put(key, b""));
    }
    let shard = shard_of(b"a");
    let scan = |pattern: &[u8], count| Scan {
        pattern: Some(Bytes::copy_from_slice(pattern)),
        ..Scan::shard(shard, count)
    };
    let page = scan_page(&kv, scan(b"ab*", 100));
    assert_eq!(keys_of(&page), [&b"ab"[..], b"abc"]);
    assert_eq!(page.examined, 2, "only the keys under the prefix are read");
    let page = scan_page(&kv, scan(b"a?", 4));
    assert_eq!(keys_of(&page), [&b"ab"[..], b"ac"]);
    assert_eq!(page.examined, 4, "non-matching keys count as examined");
    assert_eq!(page.next.as_deref(), Some(&b"ac"[..]));
    let page = scan_page(
        &kv,
        Scan {
            after: Some(Bytes::from_static(b"ab")),
            last: Some(Bytes::from_static(b"ax")),
            ..Scan::shard(shard, 100)
        },
    );
    assert_eq!(keys_of(&page), [&b"abc"[..], b"ac", b"ax"]);
    assert_eq!(page.next, None, "the range ends at its last key");
}

#[test]
fn a_page_stops_at_its_byte_budget_but_always_examines_one_key() {
    let mut kv = KvState::new();
    let big = vec![b'v'; scan::SCAN_PAGE_BYTES_MAX];
    kv.execute(&put(b"a1", &big));
    kv.execute(&put(b"a2", &big));
    let scan = Scan {
        values: true,
        ..Scan::shard(shard_of(b"a"), 0)
    };
    let page = scan_page(&kv, scan.clone());
    assert_eq!(
        keys_of(&page),
        [&b"a1"[..]],
        "a count of 0 examines one key"
    );
    let page = scan_page(&kv, Scan { count: 100, ..scan });
    assert_eq!(keys_of(&page), [&b"a1"[..]]);
    assert_eq!(page.next.as_deref(), Some(&b"a1"[..]));
}

#[test]
fn a_count_is_its_shards_keys_and_not_held_elsewhere() {
    let mut kv = KvState::new();
    for key in [&b"a3"[..], b"a1", b"a2", b"b1"] {
        kv.execute(&put(key, b"value"));
    }
    kv.execute(&Op::Delete {
        key: Bytes::from_static(b"a2"),
    });
    let count = |kv: &KvState, shard| kv.read(&Op::Count { shard });
    assert_eq!(count(&kv, shard_of(b"a")), Reply::Counted(2));
    assert_eq!(count(&kv, shard_of(b"b")), Reply::Counted(1));
    assert_eq!(count(&kv, shard_of(b"c")), Reply::Counted(0));
    assert!(Op::Count { shard: ShardId(0) }.is_read());
    let without = KvState::without_shards();
    assert_eq!(
        count(&without, shard_of(b"a")),
        Reply::NotHeld(shard_of(b"a"))
    );
    let mut exported = kv.clone();
    exported.drop_shard(shard_of(b"a"));
    assert_eq!(
        count(&exported, shard_of(b"a")),
        Reply::NotHeld(shard_of(b"a"))
    );
}
