//! kv-replication: the sans-IO protocol cores of kv and the deterministic simulator that
//! drives them.
//!
//! Every protocol node (Paxos peer, KV replica, view service, primary/backup server, shard
//! master, shard KV replica) is a plain struct: inputs (messages, ticks, client requests,
//! each stamped with `now`) go in, effects come out. The driver applies effects in a fixed
//! order — make `persist` durable, then `send`, then `reply` — so an acknowledgement never
//! depends on state that a crash could take back. No core reads the clock, a global RNG, a
//! socket or a file.
