//! The at-most-once table: per client, the last write executed and its reply.
//!
//! Part of the replicated state, so every replica holds the same table at the same log
//! position, and it travels in snapshots, state transfers and (for the clients of a moving
//! shard) shard handoffs. The client model is the labs': one request outstanding per
//! client, numbered by a strictly increasing `seq` (one counter across all its requests).
//! A request whose seq equals the client's last executed one gets the stored reply again;
//! an older one is stale; a newer one executes.
//!
//! # Bounded
//! Each entry carries its *age*: the log position of the client's last write. When the
//! table passes [`Sessions::CLIENTS_MAX`] clients, the least recently written ones are
//! forgotten — down to [`Sessions::CLIENTS_KEPT`], oldest `(age, client)` first — a
//! deterministic rule of the entries alone, which every replica applies at the same log
//! position. Forgetting in a batch keeps the hot path (a client that writes again) to one
//! map update, with no age index to maintain; the pass over the table it costs is paid
//! once per `CLIENTS_MAX - CLIENTS_KEPT` new clients. A client idle that long that
//! re-sends an old write would run it again; the bound is a trade of memory for that
//! window.
//!
//! Imported entries (a shard's clients arriving from another group) are merged, never
//! replacing a newer entry: per client the higher seq wins, and an adopted entry's age
//! becomes the position of the import in *this* group's log — the exporter's positions
//! mean nothing here.
//!
//! The table is small by construction (the bound), so plain ordered maps serve: a frozen
//! copy for a snapshot or a transfer is a clone of at most [`Sessions::CLIENTS_MAX`]
//! entries, while every write — the hot path — pays an ordinary B-tree update.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::paxos::Seq;
use crate::types::ClientId;

/// One client's entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session<R> {
    /// The last seq executed for the client.
    pub seq: u64,
    /// That request's reply, returned again if it is re-sent.
    pub reply: R,
    /// The log position that executed it (or adopted the entry).
    pub age: Seq,
}

/// What the table says about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen<R> {
    /// Not executed yet: execute it.
    New,
    /// Already executed: this is its reply.
    Duplicate(R),
    /// Older than the last executed request, whose seq this is.
    Stale(u64),
}

/// The table. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sessions<R: Clone> {
    entries: BTreeMap<ClientId, Session<R>>,
}

impl<R: Clone> Default for Sessions<R> {
    fn default() -> Self {
        Sessions {
            entries: BTreeMap::new(),
        }
    }
}

impl<R: Clone> Sessions<R> {
    /// Most clients remembered. A constant, not a tunable: every replica must apply the
    /// same rule or their states diverge.
    pub const CLIENTS_MAX: usize = 10_000;
    /// Clients left after the table passed [`Sessions::CLIENTS_MAX`].
    pub const CLIENTS_KEPT: usize = Self::CLIENTS_MAX - Self::CLIENTS_MAX / 16;

    /// An empty table.
    pub fn new() -> Sessions<R> {
        Sessions::default()
    }

    /// What the table says about request `seq` of `client`.
    pub fn seen(&self, client: ClientId, seq: u64) -> Seen<R> {
        match self.entries.get(&client) {
            Some(entry) if seq == entry.seq => Seen::Duplicate(entry.reply.clone()),
            Some(entry) if seq < entry.seq => Seen::Stale(entry.seq),
            _ => Seen::New,
        }
    }

    /// The last seq executed for `client`, if it has an entry.
    pub fn last_seq(&self, client: ClientId) -> Option<u64> {
        self.entries.get(&client).map(|e| e.seq)
    }

    /// Records that `client`'s request `seq` executed at `at` with `reply`, then forgets
    /// the oldest clients beyond the bound.
    pub fn record(&mut self, client: ClientId, seq: u64, reply: R, at: Seq) {
        self.put(
            client,
            Session {
                seq,
                reply,
                age: at,
            },
        );
        self.trim();
    }

    /// Merges an entry from another group's table (see the module docs); `at` is the
    /// position of the import in this log. Returns whether it was adopted.
    pub fn merge(&mut self, client: ClientId, seq: u64, reply: R, at: Seq) -> bool {
        if self.last_seq(client).is_some_and(|ours| ours >= seq) {
            return false;
        }
        self.put(
            client,
            Session {
                seq,
                reply,
                age: at,
            },
        );
        self.trim();
        true
    }

    fn put(&mut self, client: ClientId, session: Session<R>) {
        self.entries.insert(client, session);
    }

    fn trim(&mut self) {
        if self.entries.len() <= Self::CLIENTS_MAX {
            return;
        }
        let mut by_age: Vec<(Seq, ClientId)> =
            self.entries.iter().map(|(c, s)| (s.age, *c)).collect();
        let forget = self.entries.len() - Self::CLIENTS_KEPT;
        by_age.select_nth_unstable(forget - 1);
        for (_, client) in &by_age[..forget] {
            self.entries.remove(client);
        }
    }

    /// Number of clients remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, by client id.
    pub fn iter(&self) -> impl Iterator<Item = (ClientId, &Session<R>)> {
        self.entries.iter().map(|(c, s)| (*c, s))
    }

    /// Entries after `after` (from the first if `None`), at most `count`.
    pub fn range_after(
        &self,
        after: Option<ClientId>,
        count: usize,
    ) -> Vec<(ClientId, Session<R>)> {
        let iter: Box<dyn Iterator<Item = (&ClientId, &Session<R>)>> = match after {
            Some(after) => Box::new(
                self.entries
                    .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            ),
            None => Box::new(self.entries.iter()),
        };
        iter.take(count).map(|(c, s)| (*c, s.clone())).collect()
    }

    /// Adds an entry read back from an image. Errors on a client that is already present
    /// or an age at or after `next` (the image's apply cursor).
    pub fn restore(
        &mut self,
        client: ClientId,
        session: Session<R>,
        next: Seq,
    ) -> Result<(), String> {
        if self.entries.contains_key(&client) {
            return Err(format!("client {client} appears twice in the image"));
        }
        if session.age >= next {
            return Err(format!(
                "client {client} was last written at {}, but the image is applied only up to {next}",
                session.age
            ));
        }
        self.put(client, session);
        Ok(())
    }

    /// Forgets every entry (for a state that is being replaced wholesale).
    pub fn clear(&mut self) {
        *self = Sessions::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resent_request_gets_its_reply_an_older_one_is_stale_a_newer_one_is_new() {
        let mut s: Sessions<&'static str> = Sessions::new();
        assert_eq!(s.seen(ClientId(1), 1), Seen::New);
        s.record(ClientId(1), 5, "five", Seq(0));
        assert_eq!(s.seen(ClientId(1), 5), Seen::Duplicate("five"));
        assert_eq!(s.seen(ClientId(1), 4), Seen::Stale(5));
        assert_eq!(s.seen(ClientId(1), 6), Seen::New);
        assert_eq!(s.seen(ClientId(2), 5), Seen::New);
    }

    #[test]
    fn beyond_the_bound_the_least_recently_written_clients_are_forgotten() {
        let mut s: Sessions<u8> = Sessions::new();
        let max = Sessions::<u8>::CLIENTS_MAX as u64;
        let kept = Sessions::<u8>::CLIENTS_KEPT as u64;
        for c in 0..max {
            s.record(ClientId(c), 1, 0, Seq(c));
        }
        assert_eq!(s.len() as u64, max, "up to the bound, nobody is forgotten");
        // Client 0 writes again: it is now the youngest.
        s.record(ClientId(0), 2, 0, Seq(max));
        assert_eq!(s.len() as u64, max);
        // One client too many: the oldest are forgotten, down to CLIENTS_KEPT.
        s.record(ClientId(max), 1, 0, Seq(max + 1));
        assert_eq!(s.len() as u64, kept);
        let forgotten = max + 1 - kept;
        assert_eq!(s.last_seq(ClientId(0)), Some(2));
        for c in 1..=forgotten {
            assert_eq!(s.last_seq(ClientId(c)), None, "client {c}");
        }
        assert_eq!(s.last_seq(ClientId(forgotten + 1)), Some(1));
        assert_eq!(s.last_seq(ClientId(max)), Some(1));
        // New clients fill the table again before anything more is forgotten.
        for c in max + 1..max + 1 + (max - kept) {
            s.record(ClientId(c), 1, 0, Seq(c + 1));
        }
        assert_eq!(s.len() as u64, max);
        assert_eq!(s.last_seq(ClientId(forgotten + 1)), Some(1));
    }

    #[test]
    fn equal_ages_are_forgotten_in_client_order() {
        let mut s: Sessions<u8> = Sessions::new();
        let max = Sessions::<u8>::CLIENTS_MAX as u64;
        // Every client written at the same position, in descending client order.
        for c in (0..=max).rev() {
            s.record(ClientId(c), 1, 0, Seq(7));
        }
        let forgotten = max + 1 - Sessions::<u8>::CLIENTS_KEPT as u64;
        assert_eq!(s.iter().next().map(|(c, _)| c), Some(ClientId(forgotten)));
    }

    #[test]
    fn a_merge_keeps_the_higher_seq_and_ages_adopted_entries_at_the_import() {
        let mut s: Sessions<&'static str> = Sessions::new();
        s.record(ClientId(1), 7, "ours", Seq(3));
        s.record(ClientId(2), 1, "ours", Seq(4));
        assert!(!s.merge(ClientId(1), 5, "theirs", Seq(10)));
        assert!(!s.merge(ClientId(1), 7, "theirs", Seq(10)));
        assert!(s.merge(ClientId(2), 2, "theirs", Seq(10)));
        assert!(s.merge(ClientId(3), 9, "theirs", Seq(10)));
        assert_eq!(s.seen(ClientId(1), 7), Seen::Duplicate("ours"));
        assert_eq!(s.seen(ClientId(2), 2), Seen::Duplicate("theirs"));
        let ages: Vec<(ClientId, Seq)> = s.iter().map(|(c, e)| (c, e.age)).collect();
        assert_eq!(
            ages,
            vec![
                (ClientId(1), Seq(3)),
                (ClientId(2), Seq(10)),
                (ClientId(3), Seq(10))
            ]
        );
    }

    #[test]
    fn restoring_refuses_duplicates_and_ages_from_the_future() {
        let mut s: Sessions<u8> = Sessions::new();
        let entry = |age| Session {
            seq: 1,
            reply: 0,
            age: Seq(age),
        };
        s.restore(ClientId(1), entry(3), Seq(5)).unwrap();
        assert!(s.restore(ClientId(1), entry(3), Seq(5)).is_err());
        assert!(s.restore(ClientId(2), entry(5), Seq(5)).is_err());
        assert_eq!(s.range_after(None, 10).len(), 1);
        assert!(s.range_after(Some(ClientId(1)), 10).is_empty());
    }

    #[test]
    fn a_frozen_copy_does_not_see_later_writes() {
        let mut s: Sessions<u8> = Sessions::new();
        s.record(ClientId(1), 1, 1, Seq(0));
        let frozen = s.clone();
        s.record(ClientId(1), 2, 2, Seq(1));
        assert_eq!(frozen.last_seq(ClientId(1)), Some(1));
        assert_eq!(s.last_seq(ClientId(1)), Some(2));
    }
}
