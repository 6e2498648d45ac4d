//! The clerk: the client side of any replicated group ([`crate::replica`]), sans IO,
//! generic over the machine's command type — the kv group and the shard master use this
//! one implementation.
//!
//! A clerk has a client id, a sequence counter, the list of replicas it may use and the one
//! it is currently talking to. It keeps at most one request outstanding (the library's
//! at-most-once model, [`crate::replica::Sessions`]); every retry re-sends the *same*
//! request (same seq), so a replica that already executed it answers from its dedup table.
//!
//! The driver calls [`Clerk::begin`] with an op and sends the returned request to the
//! returned replica; on a reply it calls [`Clerk::on_reply`]; when the call failed (no
//! answer in time, connection lost, [`crate::replica::Event::Dropped`]) it calls
//! [`Clerk::on_failure`] and sends the same request to the replica that returns. Retries go
//! on forever, round-robin over the replica list, as in the lab. A replica's word on who
//! leads ([`Clerk::on_leader`]) moves the clerk there; a caller that stops waiting
//! [`Clerk::abandon`]s the request. The simulator's clerks, the native client and the RESP
//! front door of an unsharded node all drive this one type (a sharded cluster's clients
//! drive [`crate::shardkv::ShardClerk`], which routes by configuration on the same rules).

use crate::replica::Request;
use crate::types::{ClientId, NodeId};

/// Misuse of a clerk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClerkError {
    /// `begin` while a request is outstanding.
    #[error("clerk {0} already has a request outstanding")]
    Busy(ClientId),
}

/// What every clerk keeps whatever it routes by: a client id, its sequence counter and
/// at most one outstanding request, re-sent unchanged until answered or abandoned. The
/// group clerk ([`Clerk`]) and the sharded one ([`crate::shardkv::ShardClerk`]) are this
/// plus where to send.
#[derive(Debug, Clone)]
pub struct Outstanding<C> {
    client: ClientId,
    last_seq: u64,
    request: Option<Request<C>>,
}

impl<C: Clone> Outstanding<C> {
    /// Nothing outstanding yet for `client`.
    pub fn new(client: ClientId) -> Outstanding<C> {
        Outstanding {
            client,
            last_seq: 0,
            request: None,
        }
    }

    /// The client id.
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// The outstanding request, if any.
    pub fn get(&self) -> Option<&Request<C>> {
        self.request.as_ref()
    }

    /// Numbers a new request for `command`; refused while one is outstanding.
    pub fn begin(&mut self, command: C) -> Result<Request<C>, ClerkError> {
        if self.request.is_some() {
            return Err(ClerkError::Busy(self.client));
        }
        self.last_seq += 1;
        let request = Request {
            client: self.client,
            seq: self.last_seq,
            command,
        };
        self.request = Some(request.clone());
        Ok(request)
    }

    /// Whether `seq` answers the outstanding request (which is then done).
    pub fn complete(&mut self, seq: u64) -> bool {
        match &self.request {
            Some(request) if request.seq == seq => {
                self.request = None;
                true
            }
            _ => false,
        }
    }

    /// Gives up on the outstanding request: it may still be executed, once at most; the
    /// next request has a higher sequence number, so after that one nothing older can.
    pub fn abandon(&mut self) {
        self.request = None;
    }
}

/// One client of a replicated group whose commands are `C`. See the module docs.
#[derive(Debug, Clone)]
pub struct Clerk<C> {
    outstanding: Outstanding<C>,
    replicas: Vec<NodeId>,
    target: usize,
}

impl<C: Clone> Clerk<C> {
    /// A clerk for `client` that tries `replicas` in order, starting with the first.
    /// Panics on an empty list.
    pub fn new(client: ClientId, replicas: Vec<NodeId>) -> Clerk<C> {
        assert!(!replicas.is_empty(), "a clerk needs at least one replica");
        Clerk {
            outstanding: Outstanding::new(client),
            replicas,
            target: 0,
        }
    }

    /// The client id.
    pub fn client(&self) -> ClientId {
        self.outstanding.client()
    }

    /// A replica said `leader` leads: later sends (and this request's retries) go there
    /// first. A node not in the replica list is ignored.
    pub fn on_leader(&mut self, leader: NodeId) {
        if let Some(i) = self.replicas.iter().position(|&r| r == leader) {
            self.target = i;
        }
    }

    /// Gives up on the outstanding request (its caller stopped waiting); see
    /// [`Outstanding::abandon`].
    pub fn abandon(&mut self) {
        self.outstanding.abandon();
    }

    /// The replica the next send goes to.
    pub fn target(&self) -> NodeId {
        self.replicas[self.target]
    }

    /// The outstanding request, if any.
    pub fn outstanding(&self) -> Option<&Request<C>> {
        self.outstanding.get()
    }

    /// Starts a request for `command`: returns where to send it and what to send.
    pub fn begin(&mut self, command: C) -> Result<(NodeId, Request<C>), ClerkError> {
        let request = self.outstanding.begin(command)?;
        Ok((self.target(), request))
    }

    /// A reply to the request numbered `seq` arrived. Returns the answer if it completes
    /// the outstanding request; a reply to anything else (a late duplicate) is ignored.
    pub fn on_reply<R>(&mut self, seq: u64, reply: R) -> Option<R> {
        self.outstanding.complete(seq).then_some(reply)
    }

    /// The last send failed or timed out: returns the next replica and the same request,
    /// or `None` if nothing is outstanding.
    pub fn on_failure(&mut self) -> Option<(NodeId, Request<C>)> {
        let request = self.outstanding.get()?.clone();
        self.target = (self.target + 1) % self.replicas.len();
        Some((self.target(), request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kv_engine::kv::{Op, Reply};

    fn get() -> Op {
        Op::Get {
            key: Bytes::from_static(b"k"),
        }
    }

    #[test]
    fn one_request_at_a_time_with_increasing_seqs() {
        let mut clerk: Clerk<Op> = Clerk::new(ClientId(4), vec![NodeId(0), NodeId(1)]);
        let (to, first) = clerk.begin(get()).unwrap();
        assert_eq!((to, first.seq, first.client), (NodeId(0), 1, ClientId(4)));
        assert_eq!(clerk.begin(get()), Err(ClerkError::Busy(ClientId(4))));
        assert_eq!(clerk.on_reply(1, Reply::Ok), Some(Reply::Ok));
        let (_, second) = clerk.begin(get()).unwrap();
        assert_eq!(second.seq, 2);
    }

    #[test]
    fn retries_resend_the_same_request_round_robin_and_late_replies_are_ignored() {
        let mut clerk: Clerk<Op> = Clerk::new(ClientId(1), vec![NodeId(2), NodeId(0), NodeId(1)]);
        let (_, request) = clerk.begin(get()).unwrap();
        let targets: Vec<NodeId> = (0..4)
            .map(|_| {
                let (to, again) = clerk.on_failure().unwrap();
                assert_eq!(again, request);
                to
            })
            .collect();
        assert_eq!(targets, vec![NodeId(0), NodeId(1), NodeId(2), NodeId(0)]);
        assert_eq!(clerk.on_reply(7, Reply::Ok), None);
        assert!(clerk.outstanding().is_some());
        assert_eq!(clerk.on_reply(1, Reply::Ok), Some(Reply::Ok));
        assert_eq!(clerk.on_failure(), None);
    }

    #[test]
    fn a_leader_hint_moves_the_clerk_and_an_abandoned_request_frees_it() {
        let mut clerk: Clerk<Op> = Clerk::new(ClientId(1), vec![NodeId(2), NodeId(0), NodeId(1)]);
        clerk.on_leader(NodeId(1));
        clerk.on_leader(NodeId(9));
        let (to, request) = clerk.begin(get()).unwrap();
        assert_eq!(to, NodeId(1));
        assert_eq!(clerk.on_failure(), Some((NodeId(2), request.clone())));
        clerk.abandon();
        assert_eq!(clerk.on_failure(), None);
        let (_, next) = clerk.begin(get()).unwrap();
        assert_eq!(next.seq, request.seq + 1);
    }
}
