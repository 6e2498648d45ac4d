//! A primary/backup server (Lab 2B): serves Get / Put / Append as the primary of its view,
//! or mirrors the primary as its backup.
//!
//! # The primary
//! Each client request gets the next position of the primary's sequence and is applied
//! at once (through the same at-most-once table as every group: a re-sent write answers
//! its stored reply). With a backup in the view, the request is forwarded, and its answer
//! waits until the backup reports it applied that position ([`Message::Applied`]) — reads
//! too, so an old primary that was replaced never answers a read alone. Forwards go in
//! order, batched per step, and are sent again from the backup's position when it stops
//! advancing. A view without a backup answers at once. A primary acknowledges its view
//! to the view service only once its backup holds the whole state.
//!
//! # The backup
//! A server that becomes backup (in its current life) pulls the primary's whole state —
//! data and at-most-once entries — as a chunked transfer of a frozen copy (the replicated
//! groups' image stream and transfer, `crate::replica`), so a large state never needs one
//! large message. It then applies forwarded requests in order, only from the primary of
//! its current view, and only while that view is current: a forward from anyone else, or
//! for another view, is refused with the backup's view, which tells a replaced primary it
//! was replaced.
//!
//! # Invariants
//! - A server serves clients only as the primary of its current view, in its current life,
//!   holding that view's state: it was primary of the earlier view, or its backup with the
//!   whole state installed (the first primary of view 1 starts from the empty state).
//! - Every answer of a primary with a backup follows the backup's application of that
//!   position, and the backup applies a view's forwards only while that view is current
//!   for it. So when the backup is promoted, it holds every acknowledged write, and an old
//!   primary cut off from the view service cannot answer anything once its backup moved on.
//!
//! # Persistence and failure model
//! As in the lab, state lives in memory only; nothing is written to disk (the
//! [`Effects::persist`] of this core is always empty). A restart is a new life with an
//! empty state, and the view service treats the former life as dead. A disk would not
//! help: the ack rule cannot let a restarted server back into a role without a full state
//! transfer (its disk may be behind the views that went on without it), and a synced
//! write per request is the latency this mode is chosen to avoid. What loses nothing:
//! - one server failing (crash, restart, or partition from the view service) at a time,
//!   once the view is acknowledged by its primary and its backup holds the state; then,
//!   after each failure, one more once the view service replaced the failed server and the
//!   new view is acknowledged again (its new backup, if any, received the state). A failure
//!   is repaired only when the view service noticed it: a crashed server's pings still in
//!   flight keep it alive to the view service for up to `DEAD_PINGS` intervals after they
//!   arrive;
//! - any number of failures of servers in no role (once view 1 exists);
//! - partitions that leave the primary and the backup with the view service, and lost,
//!   duplicated, delayed or reordered messages (a member whose pings are all lost for
//!   `DEAD_PINGS` intervals is dead to the view service: that is a failure).
//!
//! What does not — the service is then stuck for good, by design, since no server may
//! become primary without the state: the primary failing before it acknowledged its view
//! (including the first primary, and a backup promoted by the view service after it
//! crashed, while its last pings were still arriving); the primary and the backup failing
//! together, or the second before the first was repaired. The simulator's `pb` sweep
//! injects exactly the failures above that lose nothing.
//!
//! The view service is a single point of failure for view changes: while it is down the
//! current view's primary and backup go on serving, but no failure is repaired. It
//! persists its view and resumes from it when restarted (see [`super::viewservice`]), so
//! its crash loses nothing; the loss of its disk loses the service.

use std::collections::VecDeque;
use std::time::Duration;

use super::message::{Member, Message, PbEvent, Reply, Request, View};
use super::viewservice::PING_INTERVAL;
use crate::codec;
use crate::effects::Effects;
use crate::kvgroup::Batch;
use crate::node::Node;
use crate::paxos::Seq;
use crate::replica::applied::{Applied, ImageAssembler, ImageStream};
use crate::replica::transfer::{Incoming, Outgoing, Received, Retry, Served};
use crate::replica::{Event, Request as KvRequest};
use crate::rng::Rng;
use crate::types::{NodeId, Time};
use kv_engine::kv::KvState;

/// Most requests applied by the primary and not yet applied by its backup; beyond it,
/// new requests are refused (the client retries).
pub const UNACKED_REQUESTS_MAX: usize = 4096;
/// Most bytes of keys and values in those requests.
pub const UNACKED_BYTES_MAX: usize = 64 << 20;
/// Most bytes of requests in one forward (a single larger request still goes whole).
pub const FORWARD_BYTES_MAX: usize = 1 << 20;
/// First wait before forwards (or a probe) are sent again to a backup that did not
/// advance; it doubles per try up to [`FORWARD_RETRY_MAX`].
const FORWARD_RETRY: Duration = Duration::from_millis(20);
/// Longest wait before forwards are sent again.
const FORWARD_RETRY_MAX: Duration = Duration::from_millis(400);
/// First wait before a state-transfer chunk is asked for again.
const TRANSFER_RETRY: Duration = Duration::from_millis(50);
/// Longest wait before a chunk is asked for again.
const TRANSFER_RETRY_MAX: Duration = Duration::from_secs(1);
/// The rate a chunk is assumed to move at when timing its retries.
const TRANSFER_BYTES_PER_SEC: u64 = 64 << 20;

/// A server's role in its current view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Primary, holding the view's state: serves clients.
    Primary,
    /// Primary without the state (a view it cannot serve; never made by the view service
    /// for a server's current life, refused for safety).
    Orphan,
    /// Backup.
    Backup,
    /// In no role.
    Idle,
}

impl Role {
    /// Its name in status reports.
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Orphan => "orphan",
            Role::Backup => "backup",
            Role::Idle => "idle",
        }
    }
}

/// A request the primary applied and waits to answer.
struct Waiting {
    at: Seq,
    tag: u64,
    reply: kv_engine::kv::Reply,
}

/// A primary/backup server core. See the module docs.
pub struct PbServer {
    me: Member,
    view_service: NodeId,
    rng: Rng,
    view: View,
    /// The view whose state `applied` holds (`None`: nothing trusted).
    holds: Option<u64>,
    applied: Applied<KvState>,
    /// Primary: requests applied here and not yet by the backup, in order.
    unacked: VecDeque<(Seq, KvRequest<Batch>)>,
    unacked_bytes: usize,
    /// Primary: answers waiting for the backup, in order.
    waiting: VecDeque<Waiting>,
    /// Primary: the backup holds the state and applied everything below this.
    backup_next: Option<Seq>,
    /// Primary: forwards were sent up to (not including) this position.
    sent_until: Seq,
    /// Primary: when forwards were last sent, and tries since the backup last advanced.
    forwarded: Time,
    forward_attempts: u32,
    /// Primary: state transfers served to a new backup.
    outgoing: Outgoing<ImageStream<KvState>>,
    /// Backup: the state transfer being received.
    incoming: Option<Incoming<ImageAssembler<KvState>>>,
    last_ping: Option<Time>,
    held: bool,
}

impl PbServer {
    /// A server `me` (a new life: a restart makes a new server) that pings `view_service`;
    /// `seed` draws its boot id and transfer ids.
    pub fn new(me: NodeId, view_service: NodeId, seed: u64) -> PbServer {
        let mut rng = Rng::new(seed);
        let boot = rng.next_u64();
        PbServer {
            me: Member { node: me, boot },
            view_service,
            rng,
            view: View::default(),
            holds: None,
            applied: Applied::initial(KvState::new()),
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            waiting: VecDeque::new(),
            backup_next: None,
            sent_until: Seq::ZERO,
            forwarded: Time::ZERO,
            forward_attempts: 0,
            outgoing: Outgoing::default(),
            incoming: None,
            last_ping: None,
            held: false,
        }
    }

    /// This life.
    pub fn member(&self) -> Member {
        self.me
    }

    /// The view this server acts in.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// Its role in that view.
    pub fn role(&self) -> Role {
        if self.view.is_primary(self.me) {
            if self.holds == Some(self.view.viewnum) {
                Role::Primary
            } else {
                Role::Orphan
            }
        } else if self.view.is_backup(self.me) {
            Role::Backup
        } else {
            Role::Idle
        }
    }

    /// The view whose whole state it holds, if any (maybe older than its current view).
    pub fn holds(&self) -> Option<u64> {
        self.holds
    }

    /// True if it holds the whole state of its current view (the primary, or a backup
    /// whose transfer completed).
    pub fn holds_state(&self) -> bool {
        self.holds == Some(self.view.viewnum)
    }

    /// The data.
    pub fn data(&self) -> &KvState {
        &self.applied.machine
    }

    /// `(first position not applied, digest of everything applied)`.
    pub fn applied_digest(&self) -> (Seq, u64) {
        (self.applied.next, self.applied.digest)
    }

    /// Whether a primary's view is ready to be acknowledged: no backup, or a backup that
    /// holds the state.
    fn ready(&self) -> bool {
        self.view.backup.is_none() || self.backup_next.is_some()
    }

    /// The view number to ping with: a primary acknowledges its view only once ready.
    fn ping_viewnum(&self) -> u64 {
        match self.role() {
            Role::Primary if self.ready() => self.view.viewnum,
            Role::Primary | Role::Orphan => self.view.viewnum.saturating_sub(1),
            Role::Backup | Role::Idle => self.view.viewnum,
        }
    }

    fn ping(&mut self, now: Time, out: &mut Effects<Message, PbEvent>) {
        self.last_ping = Some(now);
        let msg = Message::Ping {
            viewnum: self.ping_viewnum(),
            boot: self.me.boot,
        };
        out.send.push((self.view_service, msg));
    }

    // ---------------------------------------------------------------------------------
    // Views.
    // ---------------------------------------------------------------------------------

    /// Moves to `view` if it is newer than ours.
    fn adopt(&mut self, now: Time, view: View, out: &mut Effects<Message, PbEvent>) {
        if view.viewnum <= self.view.viewnum {
            return;
        }
        let was_primary = self.role() == Role::Primary;
        let first_view = view.viewnum == 1;
        self.view = view;
        self.backup_next = None;
        self.forward_attempts = 0;
        self.incoming = None;
        if self.view.is_primary(self.me) {
            if was_primary || self.holds.is_some() || first_view {
                // The state is continuous: primary before, the backup that holds the
                // state, or the first primary of all.
                self.holds = Some(self.view.viewnum);
                self.primary_changed(now, out);
            } else {
                self.holds = None;
                self.forget(out);
            }
            return;
        }
        self.holds = None;
        self.forget(out);
        if self.view.is_backup(self.me) {
            self.pull(now, out);
        }
    }

    /// A primary's view changed: what waited for the old backup waits for the new one, or
    /// is answered now if there is none.
    fn primary_changed(&mut self, now: Time, out: &mut Effects<Message, PbEvent>) {
        self.sent_until = self.applied.next;
        self.forwarded = now;
        if self.view.backup.is_none() {
            self.acknowledged(self.applied.next, out);
        }
    }

    /// Drops the state and every waiting client (they retry at the new primary).
    fn forget(&mut self, out: &mut Effects<Message, PbEvent>) {
        for w in self.waiting.drain(..) {
            out.events.push(Event::Dropped { tag: w.tag });
        }
        self.unacked.clear();
        self.unacked_bytes = 0;
        self.applied = Applied::initial(KvState::new());
    }

    // ---------------------------------------------------------------------------------
    // The primary.
    // ---------------------------------------------------------------------------------

    fn on_kv_request(
        &mut self,
        now: Time,
        tag: u64,
        request: KvRequest<Batch>,
        out: &mut Effects<Message, PbEvent>,
    ) {
        let full =
            self.unacked.len() >= UNACKED_REQUESTS_MAX || self.unacked_bytes >= UNACKED_BYTES_MAX;
        if self.role() != Role::Primary || full {
            out.events.push(Event::Dropped { tag });
            return;
        }
        let at = self.applied.next;
        let reply = self.apply(at, &request);
        if self.view.backup.is_none() {
            out.events.push(Event::Reply {
                tag,
                reply: Reply::Kv(reply),
            });
            return;
        }
        self.unacked_bytes += request.command.payload_bytes();
        self.unacked.push_back((at, request));
        self.waiting.push_back(Waiting { at, tag, reply });
        if !self.held {
            self.flush(now, out);
        }
    }

    /// Applies `request` at position `at` (the next one).
    fn apply(&mut self, at: Seq, request: &KvRequest<Batch>) -> kv_engine::kv::Reply {
        let value = codec::encode(request).expect("a request always encodes");
        let mut replies = self
            .applied
            .apply(at, &value, std::slice::from_ref(request));
        replies.pop().expect("one reply per request")
    }

    /// Sends the backup the forwards it has not been sent, in bounded messages.
    fn flush(&mut self, now: Time, out: &mut Effects<Message, PbEvent>) {
        let (Some(backup), Some(_)) = (self.view.backup_node(), self.backup_next) else {
            return;
        };
        let from = self.sent_until;
        let mut pending = self
            .unacked
            .iter()
            .skip_while(|(at, _)| *at < from)
            .peekable();
        let mut forwards = Vec::new();
        while let Some(&&(first, _)) = pending.peek() {
            let mut requests = Vec::new();
            let mut bytes = 0;
            while let Some((_, request)) = pending.next_if(|_| bytes < FORWARD_BYTES_MAX) {
                bytes += request.command.payload_bytes();
                requests.push(request.clone());
            }
            forwards.push((first, requests));
        }
        for (first, requests) in forwards {
            self.sent_until = Seq(first.0 + requests.len() as u64);
            self.forwarded = now;
            let view = self.view.clone();
            out.send.push((
                backup,
                Message::Forward {
                    view,
                    first,
                    requests,
                },
            ));
        }
    }

    /// Sends again what the backup has not applied, or probes a backup not yet heard
    /// from, once it has been quiet long enough.
    fn resend(&mut self, now: Time, out: &mut Effects<Message, PbEvent>) {
        let Some(backup) = self.view.backup_node() else {
            return;
        };
        let behind = match self.backup_next {
            None => true,
            Some(next) => next < self.applied.next,
        };
        let wait = crate::timing::backoff(FORWARD_RETRY, self.forward_attempts, FORWARD_RETRY_MAX);
        if !behind || now - self.forwarded < wait {
            return;
        }
        self.forward_attempts += 1;
        match self.backup_next {
            Some(next) => {
                self.sent_until = next;
                self.flush(now, out);
            }
            None => {
                self.forwarded = now;
                let probe = Message::Forward {
                    view: self.view.clone(),
                    first: self.applied.next,
                    requests: Vec::new(),
                };
                out.send.push((backup, probe));
            }
        }
    }

    fn on_applied(
        &mut self,
        now: Time,
        from: NodeId,
        viewnum: u64,
        next: Seq,
        out: &mut Effects<Message, PbEvent>,
    ) {
        if self.role() != Role::Primary
            || viewnum != self.view.viewnum
            || self.view.backup_node() != Some(from)
            || next > self.applied.next
        {
            return;
        }
        if self.backup_next.is_none_or(|n| next > n) {
            self.forward_attempts = 0;
            self.forwarded = now;
            // After the state transfer, forwards resume from the image's position.
            self.sent_until = match self.backup_next {
                Some(_) => self.sent_until.max(next),
                None => next,
            };
            self.backup_next = Some(next);
            self.acknowledged(next, out);
            self.flush(now, out);
        }
    }

    /// The backup (or, without one, the primary alone) holds everything below `next`:
    /// answer what waited for it.
    fn acknowledged(&mut self, next: Seq, out: &mut Effects<Message, PbEvent>) {
        while self.unacked.front().is_some_and(|(at, _)| *at < next) {
            if let Some((_, request)) = self.unacked.pop_front() {
                self.unacked_bytes -= request.command.payload_bytes();
            }
        }
        while self.waiting.front().is_some_and(|w| w.at < next) {
            if let Some(w) = self.waiting.pop_front() {
                out.events.push(Event::Reply {
                    tag: w.tag,
                    reply: Reply::Kv(w.reply),
                });
            }
        }
    }

    fn on_image_request(
        &mut self,
        now: Time,
        from: NodeId,
        view: View,
        transfer: u64,
        chunk: u64,
        out: &mut Effects<Message, PbEvent>,
    ) {
        self.adopt(now, view.clone(), out);
        if view.viewnum < self.view.viewnum {
            out.send.push((
                from,
                Message::Refused {
                    view: self.view.clone(),
                },
            ));
            return;
        }
        if self.role() != Role::Primary || self.view.backup_node() != Some(from) {
            out.send.push((from, Message::ImageGone { transfer }));
            return;
        }
        let applied = &self.applied;
        let served = self.outgoing.serve(now, from, transfer, chunk, || {
            ImageStream::new(applied.clone())
        });
        let reply = match served {
            Served::Chunk { frames, last } => Message::ImageChunk {
                transfer,
                chunk,
                frames,
                last,
            },
            Served::Gone => Message::ImageGone { transfer },
        };
        out.send.push((from, reply));
    }

    // ---------------------------------------------------------------------------------
    // The backup.
    // ---------------------------------------------------------------------------------

    /// Starts, continues or re-asks for the state transfer a new backup needs.
    fn pull(&mut self, now: Time, out: &mut Effects<Message, PbEvent>) {
        if self.role() != Role::Backup || self.holds_state() {
            return;
        }
        let Some(primary) = self.view.primary_node() else {
            return;
        };
        let view = self.view.clone();
        if let Some(incoming) = self.incoming.as_mut() {
            match incoming.retry(
                now,
                TRANSFER_RETRY,
                TRANSFER_RETRY_MAX,
                TRANSFER_BYTES_PER_SEC,
            ) {
                Retry::Wait => return,
                Retry::Ask {
                    to,
                    transfer,
                    chunk,
                } => {
                    let ask = Message::ImageRequest {
                        view,
                        transfer,
                        chunk,
                    };
                    out.send.push((to, ask));
                    return;
                }
                Retry::GiveUp => self.incoming = None,
            }
        }
        let transfer = self.rng.next_u64();
        self.incoming = Some(Incoming::start(
            primary,
            transfer,
            now,
            ImageAssembler::new(),
        ));
        let ask = Message::ImageRequest {
            view,
            transfer,
            chunk: 0,
        };
        out.send.push((primary, ask));
    }

    #[allow(clippy::too_many_arguments)]
    fn on_image_chunk(
        &mut self,
        now: Time,
        from: NodeId,
        transfer: u64,
        chunk: u64,
        frames: &[u8],
        last: bool,
        out: &mut Effects<Message, PbEvent>,
    ) {
        let Some(incoming) = self.incoming.as_mut() else {
            return;
        };
        match incoming.receive(now, from, transfer, chunk, frames, last) {
            Received::Ignored => {}
            Received::Bad => self.incoming = None,
            Received::Ask(chunk) => {
                let ask = Message::ImageRequest {
                    view: self.view.clone(),
                    transfer,
                    chunk,
                };
                out.send.push((from, ask));
            }
            Received::Complete => {
                let Some(incoming) = self.incoming.take() else {
                    return;
                };
                let Ok(applied) = incoming.sink.finish() else {
                    return;
                };
                self.applied = applied;
                self.holds = Some(self.view.viewnum);
                let applied = Message::Applied {
                    viewnum: self.view.viewnum,
                    next: self.applied.next,
                };
                out.send.push((from, applied));
            }
        }
    }

    fn on_forward(
        &mut self,
        now: Time,
        from: NodeId,
        view: View,
        first: Seq,
        requests: Vec<KvRequest<Batch>>,
        out: &mut Effects<Message, PbEvent>,
    ) {
        let viewnum = view.viewnum;
        self.adopt(now, view, out);
        let mine = viewnum == self.view.viewnum
            && self.role() == Role::Backup
            && self.view.primary_node() == Some(from);
        if !mine {
            let refused = Message::Refused {
                view: self.view.clone(),
            };
            out.send.push((from, refused));
            return;
        }
        if !self.holds_state() {
            return; // still receiving the state; the primary probes again
        }
        for (i, request) in requests.iter().enumerate() {
            let at = Seq(first.0 + i as u64);
            if at == self.applied.next {
                self.apply(at, request);
            }
        }
        let applied = Message::Applied {
            viewnum,
            next: self.applied.next,
        };
        out.send.push((from, applied));
    }

    /// Status fields: its role, its view (numbers, so `/metrics` exports them; `-` for
    /// nobody), whether it holds the view's state, its position, its data and what waits
    /// for the backup.
    pub fn status_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![("role", self.role().name().to_string())];
        fields.extend(self.view.status_fields());
        fields.extend([
            ("holds_state", self.holds_state().to_string()),
            ("next", self.applied.next.0.to_string()),
            ("keys", self.applied.machine.len().to_string()),
            ("bytes", self.applied.machine.live_bytes().to_string()),
            ("unacked", self.unacked.len().to_string()),
        ]);
        fields
    }
}

impl Node for PbServer {
    type Msg = Message;
    type Request = Request;
    type Reply = Reply;
    type Event = PbEvent;

    fn on_boot(&mut self, now: Time, out: &mut Effects<Message, PbEvent>) {
        self.ping(now, out);
    }

    fn on_message(
        &mut self,
        now: Time,
        from: NodeId,
        msg: Message,
        out: &mut Effects<Message, PbEvent>,
    ) {
        match msg {
            Message::View { view } | Message::Refused { view } => self.adopt(now, view, out),
            Message::Forward {
                view,
                first,
                requests,
            } => self.on_forward(now, from, view, first, requests, out),
            Message::Applied { viewnum, next } => self.on_applied(now, from, viewnum, next, out),
            Message::ImageRequest {
                view,
                transfer,
                chunk,
            } => self.on_image_request(now, from, view, transfer, chunk, out),
            Message::ImageChunk {
                transfer,
                chunk,
                frames,
                last,
            } => self.on_image_chunk(now, from, transfer, chunk, &frames, last, out),
            Message::ImageGone { transfer } => {
                if self
                    .incoming
                    .as_ref()
                    .is_some_and(|i| i.from == from && i.transfer == transfer)
                {
                    self.incoming = None;
                }
            }
            Message::Ping { .. } => {}
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
            Request::View => out.events.push(Event::Reply {
                tag,
                reply: Reply::View(self.view.clone()),
            }),
            Request::Kv(request) => self.on_kv_request(now, tag, request, out),
        }
    }

    fn on_tick(&mut self, now: Time, out: &mut Effects<Message, PbEvent>) {
        if self.last_ping.is_none_or(|t| now - t >= PING_INTERVAL) {
            self.ping(now, out);
        }
        match self.role() {
            Role::Primary => self.resend(now, out),
            Role::Backup => self.pull(now, out),
            Role::Orphan | Role::Idle => {}
        }
    }

    fn hold(&mut self) {
        self.held = true;
    }

    fn release(&mut self, now: Time, out: &mut Effects<Message, PbEvent>) {
        self.held = false;
        if self.role() == Role::Primary {
            self.flush(now, out);
        }
    }

    crate::pbservice::message::message_fns!();

    fn retained_bytes(&self) -> u64 {
        self.applied.machine.live_bytes()
            + self.unacked_bytes as u64
            + self.outgoing.retained_bytes()
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
