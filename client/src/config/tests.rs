//! The cluster file's tests: layouts `kv init` writes, stamps, and files refused with their reason.

use super::*;

fn options() -> InitOptions {
    InitOptions {
        nodes: 3,
        replicas: 3,
        groups: 0,
        shards: 16,
        redis_cluster: false,
        mode: Mode::Paxos,
        host: "127.0.0.1".parse().unwrap(),
        peer_port: 17000,
        resp_port: 16380,
        admin_port: 19000,
        cluster_id: 42,
        requirepass: None,
        read_lease: None,
    }
}

#[test]
fn init_writes_a_loadable_cluster_with_stamped_directories() {
    let dir = tempfile::tempdir().unwrap();
    let made = ClusterConfig::init(dir.path(), &options()).unwrap();
    let loaded = ClusterConfig::load(&dir.path().join(CLUSTER_FILE)).unwrap();
    assert_eq!(made, loaded);
    assert_eq!(loaded.nodes.len(), 3);
    assert_eq!(loaded.node(2).unwrap().resp.port(), 16382);
    for i in 0..3 {
        assert!(check_stamp(&loaded.data_dir(i), 42, i).unwrap());
    }
}

#[test]
fn a_directory_of_another_data_format_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(STAMP_FILE), "cluster_id = 42\nnode = 1\n").unwrap();
    let error = check_stamp(dir.path(), 42, 1).unwrap_err();
    assert!(matches!(error, ConfigError::WrongFormat { found: 0, .. }));
    assert!(error.to_string().contains("format 0"), "{error}");
    write_stamp(dir.path(), 42, 1).unwrap();
    assert!(check_stamp(dir.path(), 42, 1).unwrap());
}

#[test]
fn a_wiped_directory_has_no_stamp_and_a_foreign_stamp_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig::init(dir.path(), &options()).unwrap();
    let data = config.data_dir(1);
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    assert!(!check_stamp(&data, 42, 1).unwrap());
    write_stamp(&data, 42, 2).unwrap();
    assert!(matches!(
        check_stamp(&data, 42, 1),
        Err(ConfigError::WrongStamp { found_node: 2, .. })
    ));
}

#[test]
fn cluster_ids_beyond_toml_range_are_refused_and_random_ones_fit() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options();
    opts.cluster_id = u64::MAX;
    assert!(matches!(
        ClusterConfig::init(dir.path(), &opts),
        Err(ConfigError::Invalid { .. })
    ));
    for _ in 0..64 {
        opts.cluster_id = random_cluster_id();
        let d = tempfile::tempdir().unwrap();
        ClusterConfig::init(d.path(), &opts).unwrap();
    }
}

#[test]
fn a_refused_init_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("new/cluster");
    let mut opts = options();
    opts.peer_port = u16::MAX;
    let err = ClusterConfig::init(&target, &opts).unwrap_err().to_string();
    assert!(err.contains("out of range"), "{err}");
    assert!(!dir.path().join("new").exists());
}

#[test]
fn an_init_that_fails_part_way_removes_what_it_created() {
    let dir = tempfile::tempdir().unwrap();
    // Node 1's data directory cannot be made: a file has its name.
    std::fs::write(dir.path().join("node-1"), b"in the way").unwrap();
    let err = ClusterConfig::init(dir.path(), &options()).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("node-1")]);
    assert_eq!(
        std::fs::read(dir.path().join("node-1")).unwrap(),
        b"in the way"
    );

    // A stamped node directory that was already there loses only the new stamp.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("node-0")).unwrap();
    std::fs::write(dir.path().join("node-0/keep"), b"x").unwrap();
    std::fs::write(dir.path().join("node-2"), b"in the way").unwrap();
    assert!(ClusterConfig::init(dir.path(), &options()).is_err());
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, vec!["node-0", "node-2"]);
    let node0: Vec<_> = std::fs::read_dir(dir.path().join("node-0"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(node0, vec![std::ffi::OsString::from("keep")]);
}

#[test]
fn a_primary_backup_init_puts_the_view_service_on_node_0_and_servers_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = InitOptions {
        mode: Mode::PrimaryBackup,
        replicas: 4,
        ..options()
    };
    let config = ClusterConfig::init(dir.path(), &options).unwrap();
    assert_eq!(config.nodes.len(), 5);
    assert_eq!(config.view_service, Some(0));
    assert_eq!(config.pb_servers(), vec![1, 2, 3, 4]);
    let text = std::fs::read_to_string(dir.path().join(CLUSTER_FILE)).unwrap();
    assert!(text.contains("mode = \"primary-backup\""), "{text}");
    assert!(text.contains("view_service = 0"), "{text}");
    let loaded = ClusterConfig::load(&dir.path().join(CLUSTER_FILE)).unwrap();
    assert!(loaded.is_primary_backup());
    assert!(!loaded.is_sharded());
    for id in 0..5 {
        assert!(check_stamp(&loaded.data_dir(id), loaded.cluster_id, id).unwrap());
    }
}

#[test]
fn primary_backup_files_that_make_no_sense_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let nodes = "[[node]]\nid = 0\npeer = \"127.0.0.1:1\"\nresp = \"127.0.0.1:2\"\nadmin = \"127.0.0.1:3\"\ndir = \"a\"\n\
                 [[node]]\nid = 1\npeer = \"127.0.0.1:4\"\nresp = \"127.0.0.1:5\"\nadmin = \"127.0.0.1:6\"\ndir = \"b\"\n";
    for (head, reason) in [
        ("mode = \"primary-backup\"\n", "needs view_service"),
        (
            "mode = \"primary-backup\"\nview_service = 2\n",
            "no such node",
        ),
        ("view_service = 0\n", "mode is not"),
        ("mode = \"raft\"\n", "unknown variant"),
    ] {
        std::fs::write(&path, format!("cluster_id = 1\n{head}{nodes}")).unwrap();
        let err = ClusterConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains(reason), "{head}: {err}");
    }
    std::fs::write(
        &path,
        format!("cluster_id = 1\nmode = \"primary-backup\"\nview_service = 1\n{nodes}"),
    )
    .unwrap();
    assert_eq!(ClusterConfig::load(&path).unwrap().pb_servers(), vec![0]);
    assert!("primary-backup".parse::<Mode>().is_ok());
    assert!("raft".parse::<Mode>().unwrap_err().contains("paxos"));
}

#[test]
fn malformed_cluster_files_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "cluster_id = \"x\"").unwrap();
    assert!(matches!(
        ClusterConfig::load(&path),
        Err(ConfigError::Parse { .. })
    ));
    std::fs::write(
        &path,
        "cluster_id = 1\n[[node]]\nid = 1\npeer = \"127.0.0.1:1\"\nresp = \"127.0.0.1:2\"\nadmin = \"127.0.0.1:3\"\ndir = \"d\"\n",
    )
    .unwrap();
    let err = ClusterConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("node ids must be"), "{err}");
    assert!(matches!(
        ClusterConfig::load(&dir.path().join("missing.toml")),
        Err(ConfigError::Io { .. })
    ));
}

#[test]
fn a_node_directory_records_its_shard_count_once_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    write_stamp(dir.path(), 42, 0).unwrap();
    check_shards(dir.path(), 64).unwrap();
    let text = std::fs::read_to_string(dir.path().join(STAMP_FILE)).unwrap();
    assert!(text.contains("shards = 64"), "{text}");
    check_shards(dir.path(), 64).unwrap();
    assert!(check_stamp(dir.path(), 42, 0).unwrap());
    let err = check_shards(dir.path(), 32).unwrap_err().to_string();
    assert!(
        err.contains("written with 64 shards") && err.contains("shards = 32"),
        "{err}"
    );
    // A refusal rewrites nothing.
    assert_eq!(
        std::fs::read_to_string(dir.path().join(STAMP_FILE)).unwrap(),
        text
    );
}

#[test]
fn two_nodes_of_one_host_sharing_a_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let node = |id: u32, host: &str, data: &str| {
        format!(
            "[[node]]\nid = {id}\npeer = \"{host}:{}\"\nresp = \"{host}:{}\"\nadmin = \"{host}:{}\"\ndir = \"{data}\"\n",
            7380 + id,
            6380 + id,
            9380 + id
        )
    };
    let load = |nodes: String| {
        std::fs::write(&path, format!("cluster_id = 1\n{nodes}")).unwrap();
        ClusterConfig::load(&path)
    };
    let err = load(node(0, "127.0.0.1", "node-0") + &node(1, "127.0.0.1", "./node-0/"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nodes 0 and 1 both keep their data in ./node-0/ on 127.0.0.1"),
        "{err}"
    );
    // On different hosts the same path is each host's own directory.
    load(node(0, "10.0.0.1", "/var/lib/kv") + &node(1, "10.0.0.2", "/var/lib/kv")).unwrap();
    load(node(0, "127.0.0.1", "node-0") + &node(1, "127.0.0.1", "node-1")).unwrap();
}

#[test]
fn a_misspelt_field_is_refused_rather_than_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let node = "[[node]]\nid = 0\npeer = \"127.0.0.1:1\"\nresp = \"127.0.0.1:2\"\nadmin = \"127.0.0.1:3\"\ndir = \"d\"\n";
    let sharded = "[master]\nshards = 4\nnodes = [0]\ninitial_groups = [100]\n[[group]]\ngid = 100\nnodes = [0]\n";
    std::fs::write(
        &path,
        format!("cluster_id = 1\nrequirepass = \"pw\"\n{sharded}{node}"),
    )
    .unwrap();
    assert_eq!(
        ClusterConfig::load(&path).unwrap().requirepass.as_deref(),
        Some("pw")
    );
    // Each of these would otherwise run a cluster unlike the one its file describes:
    // without the password, with protected mode on, or with a node's data elsewhere.
    for (text, field) in [
        (
            format!("cluster_id = 1\nrequirepas = \"pw\"\n{node}"),
            "requirepas",
        ),
        (
            format!("cluster_id = 1\nprotected-mode = false\n{node}"),
            "protected-mode",
        ),
        (
            format!("cluster_id = 1\n{node}data_dir = \"x\"\n"),
            "data_dir",
        ),
        (
            format!(
                "cluster_id = 1\n{}{node}",
                sharded.replace("shards = 4", "shards = 4\nshard = 8")
            ),
            "shard",
        ),
        (
            format!(
                "cluster_id = 1\n{}{node}",
                sharded.replace("gid = 100", "gid = 100\nnode = [0]")
            ),
            "node",
        ),
    ] {
        std::fs::write(&path, &text).unwrap();
        let err = ClusterConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("unknown field `{field}`")),
            "{text}\n{err}"
        );
    }
}

#[test]
fn a_password_is_kept_in_a_file_only_its_owner_reads_and_protected_mode_defaults_on() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let plain = ClusterConfig::init(dir.path(), &options()).unwrap();
    assert_eq!(plain.requirepass, None);
    assert!(plain.protected_mode);
    let path = dir.path().join(CLUSTER_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("requirepass") && !text.contains("protected_mode"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let options = InitOptions {
        requirepass: Some("s3cret pw".into()),
        ..options()
    };
    ClusterConfig::init(dir.path(), &options).unwrap();
    let path = dir.path().join(CLUSTER_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let loaded = ClusterConfig::load(&path).unwrap();
    assert_eq!(loaded.requirepass.as_deref(), Some("s3cret pw"));
    assert!(loaded.protected_mode);

    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("protected_mode = false\n{text}")).unwrap();
    assert!(!ClusterConfig::load(&path).unwrap().protected_mode);
    std::fs::write(&path, text.replace("s3cret pw", "")).unwrap();
    let empty = ClusterConfig::load(&path).unwrap_err().to_string();
    assert!(empty.contains("requirepass is empty"), "{empty}");
}

#[test]
fn growing_a_file_whose_ports_interleave_skips_every_port_already_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options();
    options.groups = 2;
    let path = dir.path().join(CLUSTER_FILE);
    let mut config = ClusterConfig::init(dir.path(), &options).unwrap();
    // Node i on ports 20000 + 3i, + 3i + 1, + 3i + 2: "after the highest peer port" is
    // node 2's RESP port.
    for (i, node) in config.nodes.iter_mut().enumerate() {
        let base = 20_000 + 3 * i as u16;
        node.peer.set_port(base);
        node.resp.set_port(base + 1);
        node.admin.set_port(base + 2);
    }
    config.save(&path).unwrap();
    config.grow(&path, 3, 3).unwrap();
    let grown = ClusterConfig::load(&path).unwrap();
    let mut ports: Vec<u16> = grown
        .nodes
        .iter()
        .flat_map(|n| [n.peer.port(), n.resp.port(), n.admin.port()])
        .collect();
    assert_eq!(grown.nodes.len(), 6);
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 18, "a port is used twice: {ports:?}");
}

#[test]
fn read_leases_are_off_unless_asked_and_out_of_range_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let plain = ClusterConfig::init(dir.path(), &options()).unwrap();
    assert_eq!(plain.read_lease, None);
    let text = std::fs::read_to_string(dir.path().join(CLUSTER_FILE)).unwrap();
    assert!(!text.contains("read_lease"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let options = InitOptions {
        read_lease: Some(ReadLease::new(300)),
        ..options()
    };
    ClusterConfig::init(dir.path(), &options).unwrap();
    let path = dir.path().join(CLUSTER_FILE);
    let loaded = ClusterConfig::load(&path).unwrap();
    assert_eq!(
        loaded.read_lease,
        Some(ReadLease {
            ms: 300,
            clock_drift_ppm: CLOCK_DRIFT_PPM_DEFAULT
        })
    );

    let text = std::fs::read_to_string(&path).unwrap();
    let body = text
        .lines()
        .filter(|l| {
            !l.starts_with("ms =") && !l.starts_with("clock_drift_ppm") && *l != "[read_lease]"
        })
        .collect::<Vec<_>>()
        .join("\n");
    for (table, reason) in [
        ("ms = 0", "read_lease.ms = 0 is out of range"),
        ("ms = 500", "read_lease.ms = 500 is out of range"),
        (
            "ms = 100\nclock_drift_ppm = 600000",
            "clock_drift_ppm = 600000 is out of range",
        ),
        ("ms = 100\nskew = 1", "unknown field"),
    ] {
        std::fs::write(&path, format!("{body}\n[read_lease]\n{table}\n")).unwrap();
        let err = ClusterConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains(reason), "{table}: {err}");
    }
    std::fs::write(&path, format!("{body}\n[read_lease]\nms = 100\n")).unwrap();
    assert_eq!(
        ClusterConfig::load(&path).unwrap().read_lease,
        Some(ReadLease::new(100))
    );
}

#[test]
fn counts_read_as_words_and_pb_names_primary_backup() {
    assert_eq!(count(1u32, "node"), "1 node");
    assert_eq!(count(0u32, "group"), "0 groups");
    assert_eq!(count(3u32, "server"), "3 servers");
    assert_eq!("pb".parse::<Mode>(), Ok(Mode::PrimaryBackup));
    assert_eq!("primary-backup".parse::<Mode>(), Ok(Mode::PrimaryBackup));
    assert_eq!("paxos".parse::<Mode>(), Ok(Mode::Paxos));
    let refused = "raft".parse::<Mode>().unwrap_err();
    assert!(
        refused.contains("\"raft\"") && refused.contains("pb"),
        "{refused}"
    );
}
