//! A RESP connection's session: who it is, what it may do, and the state that commands
//! such as AUTH, CLIENT SETNAME and a refused MULTI leave on it.

use super::*;

/// One connection's identity and its store.
pub(super) struct Session<S> {
    /// The connection's number (`HELLO`'s `id`).
    pub(super) number: u64,
    pub(super) protocol: Protocol,
    /// ASKING came just before the current command (Redis clears it after one command).
    pub(super) asking: bool,
    /// The client may run every command (it authenticated, or there is no password).
    pub(super) authenticated: bool,
    /// The name CLIENT SETNAME or HELLO SETNAME gave the connection.
    pub(super) name: Option<Bytes>,
    /// MULTI was refused and neither EXEC nor DISCARD has come since: every command until
    /// then is discarded.
    pub(super) discarding: bool,
    pub(super) access: Arc<Access>,
    pub(super) store: S,
    /// Open RESP connections (INFO's `connected_clients`).
    pub(super) connected: crate::limits::Counter,
    /// The node's SCAN resume points (shared by its connections).
    pub(super) points: Arc<ResumePoints>,
    /// The port RESP is served on (INFO's `tcp_port`).
    pub(super) port: u16,
}

impl<S> Session<S> {
    /// MULTI, EXEC, DISCARD and what comes between. kv has no transactions, but a client
    /// pipelines a transaction's commands with its MULTI and EXEC without waiting for
    /// MULTI's reply (redis-py's default `pipeline()`): run, they would apply while the
    /// client is told the transaction failed. So MULTI is refused and every command up to
    /// EXEC or DISCARD is discarded, as Redis discards a transaction with an error in it
    /// (EXEC gets `-EXECABORT`). `Some` is the reply of a command that does not run.
    pub(super) fn transaction(&mut self, command: &Command) -> Option<Frame> {
        let error = |text: &str| Some(Frame::Error(text.into()));
        match (command, self.discarding) {
            (Command::Transaction(Transaction::Multi), false) => {
                self.discarding = true;
                error(
                    "ERR MULTI is not supported: kv runs each command on its own, so the \
                     commands up to EXEC or DISCARD are discarded (pipeline without MULTI, \
                     e.g. redis-py's pipeline(transaction=False))",
                )
            }
            (Command::Transaction(Transaction::Multi), true) => {
                error("ERR MULTI calls can not be nested")
            }
            (Command::Transaction(Transaction::Exec), true) => {
                self.discarding = false;
                error("EXECABORT Transaction discarded because MULTI is not supported.")
            }
            (Command::Transaction(Transaction::Exec), false) => error("ERR EXEC without MULTI"),
            (Command::Transaction(Transaction::Discard), true) => {
                self.discarding = false;
                Some(Frame::Simple("OK".into()))
            }
            (Command::Transaction(Transaction::Discard), false) => {
                error("ERR DISCARD without MULTI")
            }
            (Command::Quit, _) | (_, false) => None,
            (_, true) => error(
                "ERR command discarded: it follows a MULTI, which kv does not support; \
                 nothing runs until EXEC or DISCARD",
            ),
        }
    }

    /// Names the connection (an empty name clears it), if Redis would take the name.
    pub(super) fn set_name(&mut self, name: Bytes) -> Result<(), Frame> {
        command::check_client_name(&name).map_err(Frame::Error)?;
        self.name = (!name.is_empty()).then_some(name);
        Ok(())
    }

    /// Checks AUTH's or HELLO's credentials; on success the connection is authenticated,
    /// on failure it stays as it was (and the reply is the error).
    pub(super) fn authenticate(&mut self, credentials: &auth::Credentials) -> Result<(), Frame> {
        let checked = self.access.check(credentials);
        match &checked {
            Ok(()) => self.authenticated = true,
            Err(_) => tracing::info!(connection = self.number, "RESP authentication failed"),
        }
        checked
    }
}
