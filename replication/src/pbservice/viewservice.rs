//! The view service (Lab 2A): decides which server is primary and which is backup.
//!
//! Servers ping every [`PING_INTERVAL`]; one that has not pinged for [`DEAD_PINGS`]
//! intervals is dead. A ping from a new life of a server (a new boot id; a restarted
//! server pings 0 until it has learned a view) means the old life is dead: it lost its
//! state. Pings from a life already replaced are ignored.
//!
//! # Rules
//! - The first server to ping becomes primary of view 1. Afterwards a view changes when its
//!   primary or backup is dead or restarted, or when it has no backup and an idle server
//!   (alive, in no role) pings. Each new view is numbered one more than the last.
//! - The primary of view `n + 1` is the primary or the backup of view `n`: an idle server
//!   is never promoted straight to primary. When the primary fails, the backup is
//!   promoted and an idle server, if any, becomes backup in the same view change.
//! - **The ack rule**: a view that would change the primary is made only once the primary
//!   of the current view has acknowledged it (pinged with its number); if the primary
//!   dies first, the service is stuck, as in the lab. A primary acknowledges a view only
//!   once its backup holds the whole state (see [`super::server`]), so a promoted backup
//!   never starts empty.
//! - One refinement, which the lab leaves open: a view whose backup fails before its
//!   primary acknowledged it (the backup died while receiving the state) may be replaced
//!   by a view with the *same primary* and another backup or none. The primary's state is
//!   continuous across those views, so nothing is lost, and a backup dying mid-transfer
//!   does not stall the service for good.
//!
//! # Persistence
//! What the service must not forget is its view and whether that view's primary
//! acknowledged it ([`Durable`]): a view service that came back at view 0 would make the
//! first server to ping primary of view 1 — maybe one holding nothing — while the
//! servers of the view it forgot still serve. So every change of the two is persisted (a
//! synced [`RECORD_KIND`] record, or every [`RECORDS_PER_SNAPSHOT`] records a snapshot of
//! the same bytes) before any answer that shows it leaves, and [`ViewService::recover`]
//! resumes from the last one. Everything else (when each server last pinged, retired
//! lives, call counts) is soft state: a recovered service treats the view's primary and
//! backup as alive from the moment it starts, so they have [`DEAD_PINGS`] intervals to
//! ping again before they are replaced — as if they had just pinged.
//!
//! # Failure model
//! The view service is a single point of failure for view changes: while it is down no
//! view changes (the primary and backup of the current view go on serving without it); a
//! restarted view service resumes from its persisted view. Its disk is needed: a view
//! service whose durable state is lost cannot know which servers hold the data (the
//! driver refuses to start one on a wiped directory). Lost, duplicated and delayed pings
//! are tolerated.
//!
//! The ack rule makes this design stuck for good, by the lab's design, whenever the
//! primary of the current view fails before acknowledging it: the first primary, or a
//! backup promoted when the primary was found dead — including a backup that had already
//! crashed but whose last pings were still arriving, if the primary was found dead (a
//! crash, a partition, lost pings) before that backup was. Nothing else may take over, as
//! only those two servers can hold the state. So the design survives one failure at a
//! time, the next only after the view service replaced the failed server and the new view
//! was acknowledged; see [`super::server`] for what loses nothing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use kv_engine::store::Recovered;
use serde::{Deserialize, Serialize};

use super::message::{Member, Message, PbEvent, Reply, Request, View};
use crate::codec;
use crate::effects::{Effects, Persist};
use crate::node::Node;
use crate::replica::Event;
use crate::types::{NodeId, Time};

/// How often servers ping (lab: 100 ms).
pub const PING_INTERVAL: Duration = Duration::from_millis(100);
/// Missed intervals after which a server is dead (lab: 5).
pub const DEAD_PINGS: u32 = 5;
/// Former boot ids remembered per server (pings from them are ignored).
const RETIRED_BOOTS_MAX: usize = 8;
/// WAL record kind of the view service's durable state (see [`Durable`]).
pub const RECORD_KIND: u8 = 5;
/// The format byte that starts every encoded [`Durable`].
pub const DURABLE_VERSION: u8 = 1;
/// Records written between snapshots (each snapshot lets the log behind it go).
pub const RECORDS_PER_SNAPSHOT: u32 = 1024;

/// What the view service persists: its view, and whether that view's primary
/// acknowledged it. Encoded as [`DURABLE_VERSION`] then the postcard bytes.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Durable {
    /// The current view.
    pub view: View,
    /// Its primary acknowledged it.
    pub acked: bool,
}

/// Why a view service's durable state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// A record or snapshot of an unknown format.
    #[error("view service state in format {found}; this build reads format {DURABLE_VERSION}")]
    Version {
        /// The format byte found.
        found: u8,
    },
    /// A record or snapshot that does not decode.
    #[error("view service state does not decode: {0}")]
    Codec(#[from] codec::CodecError),
    /// An empty payload.
    #[error("view service state is empty")]
    Empty,
    /// A WAL record of another core's kind (the directory is not a view service's).
    #[error("the log holds a record of kind {0}, not a view service's ({RECORD_KIND})")]
    Kind(u8),
}

impl Durable {
    /// The encoded bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![DURABLE_VERSION];
        out.extend(codec::encode(self).expect("a view always encodes"));
        out
    }

    /// Decodes bytes [`Durable::encode`] made.
    pub fn decode(bytes: &[u8]) -> Result<Durable, RecoverError> {
        match bytes.split_first() {
            None => Err(RecoverError::Empty),
            Some((&DURABLE_VERSION, body)) => Ok(codec::decode(body)?),
            Some((&found, _)) => Err(RecoverError::Version { found }),
        }
    }
}

/// The last ping of a server.
#[derive(Clone, Copy, Debug)]
struct Heard {
    at: Time,
    boot: u64,
}

/// The view service core. See the module docs.
pub struct ViewService {
    view: View,
    /// The primary of `view` has pinged with its number.
    acked: bool,
    heard: BTreeMap<NodeId, Heard>,
    retired: BTreeMap<NodeId, VecDeque<u64>>,
    pings: u64,
    gets: u64,
    /// The primary is dead and nothing may replace it (see the module docs): the service
    /// waits for that primary's life to ping again, or for good.
    stuck: bool,
    /// The state last handed to the driver to persist.
    persisted: Durable,
    /// Records persisted since the last snapshot.
    records: u32,
}

impl Default for ViewService {
    fn default() -> Self {
        ViewService::new()
    }
}

impl ViewService {
    /// A view service at view 0.
    pub fn new() -> ViewService {
        ViewService {
            view: View::default(),
            acked: false,
            heard: BTreeMap::new(),
            retired: BTreeMap::new(),
            pings: 0,
            gets: 0,
            stuck: false,
            persisted: Durable::default(),
            records: 0,
        }
    }

    /// Whether the current view's primary is dead and nothing may replace it: its backup
    /// is dead too, or it had not acknowledged the view. Only that primary's life pinging
    /// again (a stopped process resumed, a partition healed) unsticks the service; a
    /// restarted one is a new life without the data.
    pub fn stuck(&self) -> bool {
        self.stuck
    }

    /// The view service a driver restarts from what its disk held (nothing: a new one at
    /// view 0). The recovered view's primary and backup count as having pinged at `now`.
    pub fn recover(now: Time, recovered: &Recovered) -> Result<ViewService, RecoverError> {
        let mut durable = match &recovered.snapshot {
            Some(snapshot) => Durable::decode(&snapshot.data)?,
            None => Durable::default(),
        };
        for record in &recovered.records {
            if record.kind != RECORD_KIND {
                return Err(RecoverError::Kind(record.kind));
            }
            durable = Durable::decode(&record.payload)?;
        }
        let mut service = ViewService::new();
        for member in [durable.view.primary, durable.view.backup]
            .into_iter()
            .flatten()
        {
            service.heard.insert(
                member.node,
                Heard {
                    at: now,
                    boot: member.boot,
                },
            );
        }
        service.view = durable.view.clone();
        service.acked = durable.acked;
        service.persisted = durable;
        Ok(service)
    }

    /// The durable state now.
    pub fn durable(&self) -> Durable {
        Durable {
            view: self.view.clone(),
            acked: self.acked,
        }
    }

    /// Persists the view and its ack if either changed since last time: a synced record,
    /// or a snapshot of the same bytes every [`RECORDS_PER_SNAPSHOT`] records. The answers
    /// of the call that changed them leave only once it is durable (the driver's order).
    fn persist(&mut self, out: &mut Effects<Message, PbEvent>) {
        let durable = self.durable();
        if durable == self.persisted {
            return;
        }
        let payload = durable.encode();
        self.persisted = durable;
        self.records += 1;
        if self.records >= RECORDS_PER_SNAPSHOT {
            self.records = 0;
            out.persist.push(Persist::Snapshot(Arc::new(payload)));
        } else {
            out.persist.push(Persist::Record {
                kind: RECORD_KIND,
                payload,
                sync: true,
            });
        }
    }

    /// The current view.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// Whether the current view's primary acknowledged it.
    pub fn acked(&self) -> bool {
        self.acked
    }

    /// When server `node` last pinged, and from which life.
    pub fn heard(&self, node: NodeId) -> Option<(Time, u64)> {
        self.heard.get(&node).map(|h| (h.at, h.boot))
    }

    /// Pings and view requests answered so far.
    pub fn calls(&self) -> u64 {
        self.pings + self.gets
    }

    /// Handles a ping from server `from`'s life `boot` that has seen view `viewnum`;
    /// returns the current view.
    pub fn ping(&mut self, now: Time, from: NodeId, viewnum: u64, boot: u64) -> View {
        self.pings += 1;
        if self.retired.get(&from).is_some_and(|r| r.contains(&boot)) {
            return self.view.clone();
        }
        if let Some(old) = self.heard.get(&from).map(|h| h.boot) {
            if old != boot {
                let retired = self.retired.entry(from).or_default();
                if retired.len() == RETIRED_BOOTS_MAX {
                    retired.pop_front();
                }
                retired.push_back(old);
            }
        }
        self.heard.insert(from, Heard { at: now, boot });
        let member = Member { node: from, boot };
        if self.view.is_primary(member) && viewnum == self.view.viewnum {
            self.acked = true;
        }
        if self.view.viewnum == 0 {
            self.change(View {
                viewnum: 1,
                primary: Some(member),
                backup: None,
            });
        }
        self.advance(now);
        self.view.clone()
    }

    /// Periodic work: moves to a new view when the rules call for one.
    pub fn tick(&mut self, now: Time) {
        self.advance(now);
    }

    /// Whether `member`'s life is alive: it pinged lately and was not replaced.
    fn alive(&self, now: Time, member: Member) -> bool {
        self.heard
            .get(&member.node)
            .is_some_and(|h| h.boot == member.boot && now - h.at < PING_INTERVAL * DEAD_PINGS)
    }

    /// An alive server in no role (the lowest node id, for determinism).
    fn idle(&self, now: Time) -> Option<Member> {
        let busy = [self.view.primary_node(), self.view.backup_node()];
        self.heard
            .iter()
            .filter(|(node, _)| !busy.contains(&Some(**node)))
            .map(|(&node, h)| Member { node, boot: h.boot })
            .find(|&m| self.alive(now, m))
    }

    fn advance(&mut self, now: Time) {
        let Some(primary) = self.view.primary else {
            return;
        };
        let primary_ok = self.alive(now, primary);
        let backup_ok = self.view.backup.map(|b| self.alive(now, b));
        self.stuck = !(primary_ok || (self.acked && backup_ok == Some(true)));
        let (primary, backup) = match (primary_ok, backup_ok) {
            // Promote the backup: only once the primary acknowledged this view.
            (false, Some(true)) if self.acked => (self.view.backup, self.idle(now)),
            // Stuck: nobody holds the state (or the primary never acknowledged).
            (false, _) => return,
            // Replace a failed backup; allowed before the ack (the primary stays).
            (true, Some(false)) => (Some(primary), self.idle(now)),
            // Add a backup once the primary acknowledged the view.
            (true, None) if self.acked => match self.idle(now) {
                Some(idle) => (Some(primary), Some(idle)),
                None => return,
            },
            (true, _) => return,
        };
        self.change(View {
            viewnum: self.view.viewnum + 1,
            primary,
            backup,
        });
    }

    fn change(&mut self, view: View) {
        debug_assert_eq!(view.viewnum, self.view.viewnum + 1);
        self.view = view;
        self.acked = false;
    }

    /// Status fields.
    pub fn status_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![("role", "view-service".to_string())];
        fields.extend(self.view.status_fields());
        fields.extend([
            ("acked", self.acked.to_string()),
            ("stuck", self.stuck.to_string()),
            ("calls", self.calls().to_string()),
        ]);
        fields
    }
}

impl Node for ViewService {
    type Msg = Message;
    type Request = Request;
    type Reply = Reply;
    type Event = PbEvent;

    fn on_boot(&mut self, _now: Time, _out: &mut Effects<Message, PbEvent>) {}

    fn on_message(
        &mut self,
        now: Time,
        from: NodeId,
        msg: Message,
        out: &mut Effects<Message, PbEvent>,
    ) {
        if let Message::Ping { viewnum, boot } = msg {
            let view = self.ping(now, from, viewnum, boot);
            self.persist(out);
            out.send.push((from, Message::View { view }));
        }
    }

    fn on_request(
        &mut self,
        now: Time,
        tag: u64,
        request: Request,
        out: &mut Effects<Message, PbEvent>,
    ) {
        match request {
            Request::View => {
                self.gets += 1;
                self.advance(now);
                self.persist(out);
                out.events.push(Event::Reply {
                    tag,
                    reply: Reply::View(self.view.clone()),
                });
            }
            Request::Kv(_) => out.events.push(Event::Dropped { tag }),
        }
    }

    fn on_tick(&mut self, now: Time, out: &mut Effects<Message, PbEvent>) {
        self.tick(now);
        self.persist(out);
    }

    crate::pbservice::message::message_fns!();

    fn retained_bytes(&self) -> u64 {
        0
    }

    fn status(&self) -> Vec<(&'static str, String)> {
        self.status_fields()
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn leader(&self) -> Option<NodeId> {
        self.view.primary_node()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    #[test]
    fn a_backup_failing_before_the_ack_is_replaced_but_a_primary_failing_is_not() {
        let mut vs = ViewService::new();
        let (a, b, c) = (NodeId(1), NodeId(2), NodeId(3));
        vs.ping(at(0), a, 0, 10);
        vs.ping(at(100), a, 1, 10);
        let v = vs.ping(at(100), b, 0, 20);
        assert_eq!((v.viewnum, v.backup_node()), (2, Some(b)));
        // The backup dies while a has not acknowledged view 2; c is idle.
        for t in (200..1000).step_by(100) {
            vs.ping(at(t), a, 1, 10);
            vs.ping(at(t), c, 0, 30);
        }
        let v = vs.view().clone();
        assert_eq!(
            (v.viewnum, v.primary_node(), v.backup_node()),
            (3, Some(a), Some(c))
        );
        // Now a dies before acknowledging view 3: stuck, c is never promoted.
        assert!(!vs.stuck());
        for t in (1000..3000).step_by(100) {
            vs.ping(at(t), c, 3, 30);
        }
        assert!(vs.stuck());
        assert_eq!(vs.view().viewnum, 3);
        assert_eq!(vs.view().primary_node(), Some(a));
    }

    /// What a driver's disk would hold after `effects`: every record, in order.
    fn recovered(persisted: &[Persist]) -> Recovered {
        let mut recovered = Recovered {
            snapshot: None,
            records: Vec::new(),
        };
        for (i, p) in persisted.iter().enumerate() {
            match p {
                Persist::Record { kind, payload, .. } => {
                    recovered.records.push(kv_engine::wal::WalRecord {
                        index: i as u64 + 1,
                        kind: *kind,
                        payload: payload.clone(),
                    })
                }
                Persist::Snapshot(_) | Persist::Compaction(_) => panic!("no snapshot this early"),
            }
        }
        recovered
    }

    #[test]
    fn every_view_change_and_ack_is_persisted_before_the_answer_and_recovered() {
        let mut vs = ViewService::new();
        let (a, b) = (NodeId(1), NodeId(2));
        let mut out = Effects::new();
        vs.on_message(
            at(0),
            a,
            Message::Ping {
                viewnum: 0,
                boot: 10,
            },
            &mut out,
        );
        vs.on_message(
            at(10),
            a,
            Message::Ping {
                viewnum: 1,
                boot: 10,
            },
            &mut out,
        );
        vs.on_message(
            at(20),
            b,
            Message::Ping {
                viewnum: 0,
                boot: 20,
            },
            &mut out,
        );
        // Repeated pings change nothing durable and persist nothing.
        vs.on_message(
            at(30),
            b,
            Message::Ping {
                viewnum: 0,
                boot: 20,
            },
            &mut out,
        );
        assert_eq!(
            out.persist.len(),
            3,
            "view 1, its ack, view 2: {:?}",
            out.persist
        );
        assert!(out
            .persist
            .iter()
            .all(|p| matches!(p, Persist::Record { sync: true, .. })));

        let back = ViewService::recover(at(5000), &recovered(&out.persist)).unwrap();
        assert_eq!(back.view(), vs.view());
        assert!(!back.acked());
        // The recovered view's members count as alive from the restart: a is not replaced
        // at once, but is once it stays silent for the dead interval.
        let mut back = back;
        back.tick(at(5000 + 100));
        assert_eq!(back.view().viewnum, 2);
        // a acknowledges view 2 after the restart; then b, silent, is replaced by nobody.
        back.ping(at(5200), a, 2, 10);
        back.tick(at(5000 + 400));
        assert_eq!(back.view().viewnum, 2, "a acked, b within its grace");
        back.ping(at(5700), a, 2, 10);
        assert_eq!(
            (back.view().viewnum, back.view().backup_node()),
            (3, None),
            "b silent past its grace is dropped"
        );
    }

    #[test]
    fn a_restarted_view_service_with_nothing_on_disk_is_at_view_0_and_bad_state_is_refused() {
        let empty = Recovered {
            snapshot: None,
            records: Vec::new(),
        };
        let vs = ViewService::recover(at(0), &empty).unwrap();
        assert_eq!(vs.view().viewnum, 0);
        let mut bytes = Durable::default().encode();
        bytes[0] = DURABLE_VERSION + 1;
        assert!(matches!(
            Durable::decode(&bytes),
            Err(RecoverError::Version { .. })
        ));
        assert!(matches!(Durable::decode(&[]), Err(RecoverError::Empty)));
        let foreign = Recovered {
            snapshot: None,
            records: vec![kv_engine::wal::WalRecord {
                index: 1,
                kind: RECORD_KIND + 1,
                payload: vec![1],
            }],
        };
        assert!(matches!(
            ViewService::recover(at(0), &foreign),
            Err(RecoverError::Kind(_))
        ));
    }

    #[test]
    fn pings_from_a_replaced_life_are_ignored() {
        let mut vs = ViewService::new();
        let a = NodeId(1);
        vs.ping(at(0), a, 0, 10);
        vs.ping(at(10), a, 1, 10);
        // a restarts (boot 11): its old life is dead; a late ping of the old life changes
        // nothing.
        vs.ping(at(20), a, 0, 11);
        let before = vs.view().clone();
        vs.ping(at(30), a, 1, 10);
        assert_eq!(*vs.view(), before);
        assert!(vs.acked());
    }
}
