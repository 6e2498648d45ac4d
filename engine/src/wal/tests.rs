use super::*;
use crate::fs::{SimFs, Torn};

fn open(fs: &SimFs, options: WalOptions) -> Result<(Wal, Vec<WalRecord>)> {
    Wal::open(Arc::new(fs.clone()), Path::new("/w"), options)
}

fn small() -> WalOptions {
    WalOptions {
        segment_bytes_max: 64,
        recycle: false,
        prefill_bytes: PREFILL_BYTES_DEFAULT,
    }
}

/// A log of `records` synced 20-byte records (payload `[i; 20]`) over 64-byte segments.
fn small_log(fs: &SimFs, records: u8) -> Wal {
    let (mut wal, _) = open(fs, small()).unwrap();
    for i in 0..records {
        wal.append(0, &[i; 20]).unwrap();
    }
    wal.sync().unwrap();
    wal
}

/// Writes and syncs three 10-byte records (payload `[i; 10]`) in one default segment.
fn three_records(fs: &SimFs) {
    let (mut wal, _) = open(fs, WalOptions::default()).unwrap();
    for i in 0..3u8 {
        wal.append(0, &[i; 10]).unwrap();
    }
    wal.sync().unwrap();
}

fn payloads(records: &[WalRecord]) -> Vec<Vec<u8>> {
    records.iter().map(|r| r.payload.clone()).collect()
}

#[test]
fn synced_records_survive_a_crash_and_unsynced_ones_do_not() {
    let fs = SimFs::new();
    let (mut wal, recs) = open(&fs, WalOptions::default()).unwrap();
    assert!(recs.is_empty());
    assert_eq!(wal.append(1, b"a").unwrap(), 1);
    assert_eq!(wal.append(2, b"bb").unwrap(), 2);
    assert_eq!(wal.sync().unwrap(), 2);
    wal.append(3, b"lost").unwrap();
    fs.crash(Torn::None);
    let (wal, recs) = open(&fs, WalOptions::default()).unwrap();
    assert_eq!(payloads(&recs), vec![b"a".to_vec(), b"bb".to_vec()]);
    assert_eq!(recs[1].kind, 2);
    assert_eq!(wal.next_index(), 3);
}

#[test]
fn segments_rotate_and_reopen_in_order() {
    let fs = SimFs::new();
    let wal = small_log(&fs, 20);
    assert!(wal.segment_count() >= 7, "{}", wal.segment_count());
    fs.crash(Torn::None);
    let (wal, recs) = open(&fs, small()).unwrap();
    assert_eq!(recs.len(), 20);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.index, i as u64 + 1);
        assert_eq!(r.payload, vec![i as u8; 20]);
    }
    assert_eq!(wal.next_index(), 21);
}

#[test]
fn compaction_removes_only_wholly_covered_segments() {
    let fs = SimFs::new();
    let mut wal = small_log(&fs, 20);
    wal.compact(10).unwrap();
    assert!(wal.first_index() <= 11);
    fs.crash(Torn::None);
    let (_, recs) = open(&fs, small()).unwrap();
    assert!(recs.first().unwrap().index <= 11);
    assert_eq!(recs.last().unwrap().index, 20);
}

#[test]
fn torn_tail_of_last_segment_is_truncated() {
    let fs = SimFs::new();
    let (mut wal, _) = open(&fs, WalOptions::default()).unwrap();
    wal.append(0, b"keep").unwrap();
    wal.sync().unwrap();
    // A torn write: the first 50 bytes of a 109-byte record reached the medium.
    let mut framed = Vec::new();
    frame(&mut framed, 2, 0, &[&[7u8; 100]]);
    wal.active.append(&framed[..50]).unwrap();
    wal.active.sync().unwrap();
    drop(wal);
    let path = Path::new("/w").join(segment_name(1));
    fs.crash(Torn::None);
    let len_after_crash = fs.read_all(&path).unwrap().len();
    let (mut wal, recs) = open(&fs, WalOptions::default()).unwrap();
    assert_eq!(
        payloads(&recs),
        vec![b"keep".to_vec()],
        "torn len {len_after_crash}"
    );
    assert_eq!(fs.read_all(&path).unwrap().len(), RECORD_HEADER_BYTES + 4);
    // The log continues cleanly after the truncation.
    assert_eq!(wal.append(0, b"next").unwrap(), 2);
    wal.sync().unwrap();
    drop(wal);
    let (_, recs) = open(&fs, WalOptions::default()).unwrap();
    assert_eq!(payloads(&recs), vec![b"keep".to_vec(), b"next".to_vec()]);
}

fn prefilling(segment_bytes_max: u64, prefill_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes_max,
        recycle: false,
        prefill_bytes,
    }
}

fn file_len(fs: &SimFs, first: u64) -> u64 {
    fs.read_all(&Path::new("/w").join(segment_name(first)))
        .unwrap()
        .len() as u64
}

const RECORD_100: u64 = RECORD_HEADER_BYTES as u64 + 100;

#[test]
fn a_write_past_the_files_end_zeroes_space_ahead_and_the_syncs_after_it_keep_the_size() {
    let fs = SimFs::new();
    let (mut wal, _) = open(&fs, prefilling(1 << 20, 1000)).unwrap();
    wal.append(0, &[1; 100]).unwrap();
    wal.sync().unwrap();
    assert_eq!(file_len(&fs, 1), RECORD_100 + 1000);
    assert_eq!(wal.disk_bytes(), RECORD_100 + 1000);
    // Nine more records fit in the zeroed space: the file keeps its size.
    for i in 2..=10u8 {
        wal.append(0, &[i; 100]).unwrap();
        wal.sync().unwrap();
        assert_eq!(file_len(&fs, 1), RECORD_100 + 1000, "record {i}");
    }
    // The next one passes the end: zeros ahead of it again.
    wal.append(0, &[11; 100]).unwrap();
    wal.sync().unwrap();
    assert_eq!(file_len(&fs, 1), 11 * RECORD_100 + 1000);
    fs.crash(Torn::None);
    let (wal, recs) = open(&fs, prefilling(1 << 20, 1000)).unwrap();
    assert_eq!(recs.len(), 11);
    assert_eq!(recs[10].payload, vec![11; 100]);
    let tail = wal.truncated_tail().expect("the zeros are cut");
    assert!(tail.zeroed, "{tail:?}");
    assert_eq!((tail.offset, tail.bytes), (11 * RECORD_100, 1000));
    assert_eq!(file_len(&fs, 1), 11 * RECORD_100);
}

#[test]
fn zeros_ahead_stop_at_the_segment_size_and_a_closed_segment_is_cut_to_its_records() {
    let fs = SimFs::new();
    let options = prefilling(3 * RECORD_100, 1 << 20);
    let (mut wal, _) = open(&fs, options).unwrap();
    wal.append(0, &[1; 100]).unwrap();
    wal.sync().unwrap();
    assert_eq!(file_len(&fs, 1), 3 * RECORD_100);
    for i in 2..=4u8 {
        wal.append(0, &[i; 100]).unwrap();
    }
    wal.sync().unwrap();
    assert_eq!(file_len(&fs, 1), 3 * RECORD_100);
    assert_eq!(file_len(&fs, 4), 3 * RECORD_100);
    wal.append(0, &[5; 100]).unwrap();
    wal.rotate().unwrap();
    assert_eq!(file_len(&fs, 4), 2 * RECORD_100, "cut to its records");
    drop(wal);
    let (_, recs) = open(&fs, options).unwrap();
    assert_eq!(recs.len(), 5);
}

#[test]
fn a_disk_too_full_for_the_zeros_still_takes_the_records_that_fit() {
    let fs = SimFs::new();
    let options = prefilling(1 << 20, 1 << 20);
    let (mut wal, _) = open(&fs, options).unwrap();
    fs.set_capacity(Some(fs.bytes_under(Path::new("/w")) + 4 * RECORD_100));
    for i in 1..=4u8 {
        wal.append(0, &[i; 100]).unwrap();
        wal.sync().expect("the record fits; the zeros do not");
    }
    assert!(!wal.is_poisoned());
    fs.crash(Torn::None);
    let (_, recs) = open(&fs, options).unwrap();
    assert_eq!(recs.len(), 4);
}

#[test]
fn zeroed_tail_is_truncated() {
    let fs = SimFs::new();
    let (mut wal, _) = open(&fs, WalOptions::default()).unwrap();
    wal.append(0, b"x").unwrap();
    wal.sync().unwrap();
    wal.active.append(&[0u8; 64]).unwrap();
    wal.active.sync().unwrap();
    drop(wal);
    let (_, recs) = open(&fs, WalOptions::default()).unwrap();
    assert_eq!(payloads(&recs), vec![b"x".to_vec()]);
}

#[test]
fn flipped_bit_in_non_last_segment_is_corrupt_with_file_and_offset() {
    let fs = SimFs::new();
    let wal = small_log(&fs, 10);
    drop(wal);
    let first = Path::new("/w").join(segment_name(1));
    let second_record = (RECORD_HEADER_BYTES + 20) as u64;
    fs.flip_bit(&first, second_record + RECORD_HEADER_BYTES as u64 + 3, 2)
        .unwrap();
    match open(&fs, small()) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file, first);
            assert_eq!(offset, second_record);
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn flipped_bit_mid_last_segment_followed_by_valid_records_is_corrupt() {
    let fs = SimFs::new();
    three_records(&fs);
    let path = Path::new("/w").join(segment_name(1));
    let off = (RECORD_HEADER_BYTES + 10) as u64;
    fs.flip_bit(&path, off + RECORD_HEADER_BYTES as u64, 0)
        .unwrap();
    assert!(matches!(
        open(&fs, WalOptions::default()),
        Err(Error::Corrupt { offset, .. }) if offset == off
    ));
}

#[test]
fn flipped_bit_in_last_record_of_last_segment_is_truncated_away() {
    let fs = SimFs::new();
    three_records(&fs);
    let path = Path::new("/w").join(segment_name(1));
    let last = 2 * (RECORD_HEADER_BYTES + 10) as u64;
    fs.flip_bit(&path, last + RECORD_HEADER_BYTES as u64 + 5, 7)
        .unwrap();
    let (_, recs) = open(&fs, WalOptions::default()).unwrap();
    assert_eq!(recs.len(), 2);
}

#[test]
fn missing_middle_segment_is_corrupt() {
    let fs = SimFs::new();
    let wal = small_log(&fs, 10);
    let victim = wal.segments[1].path.clone();
    drop(wal);
    fs.remove(&victim).unwrap();
    assert!(matches!(open(&fs, small()), Err(Error::Corrupt { .. })));
}

#[test]
fn failed_fsync_poisons_the_log_for_good() {
    let fs = SimFs::new();
    let (mut wal, _) = open(&fs, WalOptions::default()).unwrap();
    wal.append(0, b"a").unwrap();
    wal.sync().unwrap();
    wal.append(0, b"b").unwrap();
    fs.fail_next_syncs(1);
    assert!(matches!(wal.sync(), Err(Error::Io { .. })));
    assert!(wal.is_poisoned());
    // The next sync would succeed on the medium, but the log must not retry.
    assert!(matches!(wal.append(0, b"c"), Err(Error::Poisoned(_))));
    assert!(matches!(wal.sync(), Err(Error::Poisoned(_))));
    assert!(matches!(wal.compact(1), Err(Error::Poisoned(_))));
    assert_eq!(wal.durable_index(), 1);
}

#[test]
fn oversized_record_is_refused_without_poisoning() {
    let fs = SimFs::new();
    let (mut wal, _) = open(&fs, WalOptions::default()).unwrap();
    let big = vec![0u8; RECORD_PAYLOAD_BYTES_MAX + 1];
    assert!(matches!(wal.append(0, &big), Err(Error::Invalid(_))));
    assert!(!wal.is_poisoned());
    assert_eq!(wal.append(0, b"ok").unwrap(), 1);
}

#[test]
fn rotate_then_compact_leaves_one_empty_segment() {
    let fs = SimFs::new();
    let options = WalOptions {
        recycle: false,
        ..WalOptions::default()
    };
    let (mut wal, _) = open(&fs, options).unwrap();
    for _ in 0..5 {
        wal.append(0, b"data").unwrap();
    }
    wal.rotate().unwrap();
    wal.compact(5).unwrap();
    assert_eq!(wal.segment_count(), 1);
    assert_eq!(wal.disk_bytes(), 0);
    fs.crash(Torn::None);
    let (wal, recs) = open(&fs, options).unwrap();
    assert!(recs.is_empty());
    assert_eq!(wal.first_index(), 6);
    assert_eq!(wal.next_index(), 6);
}

fn recycling(segment_bytes_max: u64) -> WalOptions {
    WalOptions {
        segment_bytes_max,
        recycle: true,
        prefill_bytes: PREFILL_BYTES_DEFAULT,
    }
}

/// A recycling log whose first segment (20 records of 50 bytes) was compacted into the
/// spare; the active segment starts at index 21.
fn log_with_a_spare(fs: &SimFs) -> Wal {
    let (mut wal, _) = open(fs, recycling(1 << 20)).unwrap();
    for i in 0..20u8 {
        wal.append(1, &[i; 50]).unwrap();
    }
    wal.rotate().unwrap();
    wal.compact(20).unwrap();
    wal
}

#[test]
fn a_compacted_segment_becomes_the_next_one_and_its_old_bytes_never_read_as_records() {
    let fs = SimFs::new();
    let mut wal = log_with_a_spare(&fs);
    let names = fs.list(Path::new("/w")).unwrap();
    assert_eq!(names, vec![segment_name(21), SPARE_NAME.to_string()]);
    let spare_len = 20 * (RECORD_HEADER_BYTES as u64 + 50);
    assert_eq!(wal.disk_bytes(), spare_len);
    // Two records into segment 21, then rotate: the spare becomes segment 23 and is
    // written over from offset 0.
    wal.append(1, b"a").unwrap();
    wal.append(1, b"b").unwrap();
    wal.rotate().unwrap();
    wal.append(1, b"c").unwrap();
    wal.sync().unwrap();
    let names = fs.list(Path::new("/w")).unwrap();
    assert_eq!(names, vec![segment_name(21), segment_name(23)]);
    let active = fs
        .read_all(&Path::new("/w").join(segment_name(23)))
        .unwrap();
    assert_eq!(active.len() as u64, spare_len, "recycled, not recreated");
    // After a crash the old bytes behind "c" are a torn tail, cut away on reopen.
    fs.crash(Torn::None);
    let (wal, recs) = open(&fs, recycling(1 << 20)).unwrap();
    assert_eq!(
        payloads(&recs),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(wal.next_index(), 24);
    let active = fs
        .read_all(&Path::new("/w").join(segment_name(23)))
        .unwrap();
    assert_eq!(active.len(), RECORD_HEADER_BYTES + 1);
}

#[test]
fn a_recycled_segment_is_cut_to_its_records_before_the_log_moves_on() {
    let fs = SimFs::new();
    let mut wal = log_with_a_spare(&fs);
    wal.rotate().unwrap(); // segment 21 is empty: nothing to rotate
    wal.append(1, b"x").unwrap();
    wal.rotate().unwrap(); // 21 holds "x"; the spare becomes 22
    wal.append(1, b"y").unwrap();
    wal.rotate().unwrap(); // 22 (recycled) is cut to "y" before 23 starts
    wal.append(1, b"z").unwrap();
    wal.sync().unwrap();
    fs.crash(Torn::None);
    let (_, recs) = open(&fs, recycling(1 << 20)).unwrap();
    assert_eq!(
        payloads(&recs),
        vec![b"x".to_vec(), b"y".to_vec(), b"z".to_vec()]
    );
    let middle = fs
        .read_all(&Path::new("/w").join(segment_name(22)))
        .unwrap();
    assert_eq!(middle.len(), RECORD_HEADER_BYTES + 1);
}
