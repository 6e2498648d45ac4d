//! Who may use the RESP front door: Redis's `requirepass` authentication and its
//! protected mode, with Redis's replies, so redis-cli `-a`, redis-benchmark `-a` and client
//! libraries' `password` options work unchanged.
//!
//! - With a password (`requirepass` in the cluster file) a connection starts
//!   unauthenticated: until `AUTH <password>`, `AUTH default <password>` or
//!   `HELLO <protover> AUTH default <password>` succeeds, every command but AUTH, HELLO,
//!   PING and QUIT gets `-NOAUTH` (Redis also refuses PING; kv answers it, so health checks
//!   need no password). Unknown commands and wrong arities are refused first, as in Redis.
//!   A failed AUTH leaves the connection as it was; there is one user, `default`.
//! - Without a password every connection starts authenticated; `AUTH <password>` is an
//!   error (as in Redis), `AUTH default <anything>` succeeds (Redis's `nopass` user).
//! - Protected mode (on unless `protected_mode = false`): with no password, a connection
//!   from an address that is not loopback gets `-DENIED` and is closed at once.
//!
//! Passwords are compared in time independent of where they differ. The password is never
//! logged: [`Credentials`]' `Debug` hides it.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::config::ClusterConfig;
use crate::resp::Frame;

use super::Command;

/// Redis's reply to a command that needs authentication (`shared.noautherr`).
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// Redis's reply to a bare HELLO before authentication (networking.c, `helloCommand`).
pub const HELLO_NOAUTH: &str = "NOAUTH HELLO must be called with the client already \
    authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to \
    authenticate the client and select the RESP protocol version at the same time";
/// Redis's reply to a wrong user or password (acl.c, `addAuthErrReply`).
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// Redis's reply to `AUTH <password>` when no password is set (acl.c, `authCommand`).
pub const NO_PASSWORD: &str = "ERR AUTH <password> called without any password configured \
    for the default user. Are you sure your configuration is correct?";
/// What a refused client is told in protected mode: Redis's words (networking.c,
/// `clientAcceptHandler`), with the remedies kv offers in place of Redis's `CONFIG SET`.
pub const DENIED: &str = "DENIED Redis is running in protected mode because protected mode \
    is enabled and no password is set for the default user. In this mode connections are \
    only accepted from the loopback interface. If you want to connect from external \
    computers you may adopt one of the following solutions: 1) Disable protected mode by \
    setting protected_mode = false in the cluster file and restarting the nodes, however \
    MAKE SURE the nodes are not publicly accessible from internet if you do so. 2) Set up \
    an authentication password for the default user: requirepass in the cluster file. \
    NOTE: You only need to do one of the above things in order for the server to start \
    accepting connections from the outside.";
/// The one user.
pub const DEFAULT_USER: &[u8] = b"default";

/// A user name (absent: `AUTH <password>`) and a password, as AUTH and HELLO give them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user; `None` for the one-argument `AUTH <password>`.
    pub user: Option<Bytes>,
    /// The password.
    pub password: Bytes,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// A node's RESP access rules.
#[derive(Clone, Default)]
pub struct Access {
    requirepass: Option<Bytes>,
    protected_mode: bool,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("password", &self.requirepass.is_some())
            .field("protected_mode", &self.protected_mode)
            .finish()
    }
}

impl Access {
    /// The rules a cluster file sets.
    pub fn of(config: &ClusterConfig) -> Access {
        Access::new(config.requirepass.as_deref(), config.protected_mode)
    }

    /// Rules with this password (if any) and protected mode on or off.
    pub fn new(requirepass: Option<&str>, protected_mode: bool) -> Access {
        Access {
            requirepass: requirepass.map(|p| Bytes::copy_from_slice(p.as_bytes())),
            protected_mode,
        }
    }

    /// Whether a client connecting from `remote` may talk at all: `Err` with the `-DENIED`
    /// reply if protected mode refuses it (no password, and not loopback).
    pub fn admits(&self, remote: SocketAddr) -> Result<(), Frame> {
        if self.protected_mode
            && self.requirepass.is_none()
            && !remote.ip().to_canonical().is_loopback()
        {
            return Err(Frame::Error(DENIED.into()));
        }
        Ok(())
    }

    /// Whether a new connection starts authenticated: only when there is no password.
    pub fn open(&self) -> bool {
        self.requirepass.is_none()
    }

    /// Checks AUTH's or HELLO's credentials: `Ok` authenticates the connection, `Err` is
    /// the reply (and the connection stays as it was).
    pub fn check(&self, credentials: &Credentials) -> Result<(), Frame> {
        let refused = |text: &str| Err(Frame::Error(text.into()));
        match (&credentials.user, &self.requirepass) {
            (Some(user), _) if &user[..] != DEFAULT_USER => refused(WRONGPASS),
            (None, None) => refused(NO_PASSWORD),
            (Some(_), None) => Ok(()),
            (_, Some(password)) if same_secret(password, &credentials.password) => Ok(()),
            (_, Some(_)) => refused(WRONGPASS),
        }
    }
}

/// Whether an unauthenticated connection may run `command`.
pub fn allowed_before_auth(command: &Command) -> bool {
    matches!(
        command,
        Command::Auth(_) | Command::Hello { .. } | Command::Ping(_) | Command::Quit
    )
}

/// Whether two secrets are equal, taking the same time wherever they differ (every byte
/// of the longer is looked at; only the lengths' maximum shows in the timing).
pub fn same_secret(expected: &[u8], given: &[u8]) -> bool {
    let mut difference = u8::from(expected.len() != given.len());
    for i in 0..expected.len().max(given.len()) {
        let a = expected.get(i).copied().unwrap_or(0);
        let b = given.get(i).copied().unwrap_or(0);
        difference |= std::hint::black_box(a ^ b);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(user: Option<&str>, password: &str) -> Credentials {
        Credentials {
            user: user.map(|u| Bytes::copy_from_slice(u.as_bytes())),
            password: Bytes::copy_from_slice(password.as_bytes()),
        }
    }

    fn error(result: Result<(), Frame>) -> String {
        match result {
            Err(Frame::Error(text)) => text,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    #[test]
    fn with_a_password_only_the_default_user_with_that_password_authenticates() {
        let access = Access::new(Some("pw"), true);
        assert!(!access.open());
        assert_eq!(access.check(&credentials(None, "pw")), Ok(()));
        assert_eq!(access.check(&credentials(Some("default"), "pw")), Ok(()));
        for wrong in [
            credentials(None, "p"),
            credentials(None, "pw "),
            credentials(None, ""),
            credentials(Some("default"), "PW"),
            credentials(Some("admin"), "pw"),
        ] {
            assert_eq!(error(access.check(&wrong)), WRONGPASS, "{wrong:?}");
        }
    }

    #[test]
    fn without_a_password_auth_of_a_password_alone_is_a_configuration_error() {
        let access = Access::new(None, true);
        assert!(access.open());
        assert_eq!(error(access.check(&credentials(None, "x"))), NO_PASSWORD);
        assert_eq!(access.check(&credentials(Some("default"), "x")), Ok(()));
        assert_eq!(
            error(access.check(&credentials(Some("bob"), "x"))),
            WRONGPASS
        );
    }

    #[test]
    fn protected_mode_refuses_only_clients_off_loopback_when_there_is_no_password() {
        let outside: SocketAddr = "192.0.2.7:50000".parse().unwrap();
        let outside6: SocketAddr = "[2001:db8::1]:50000".parse().unwrap();
        let inside = [
            "127.0.0.1:50000",
            "127.3.2.1:1",
            "[::1]:50000",
            "[::ffff:127.0.0.1]:9",
        ];
        let protected = Access::new(None, true);
        for remote in [outside, outside6] {
            let denied = error(protected.admits(remote));
            assert!(denied.starts_with("DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user."), "{denied}");
        }
        for remote in inside {
            assert_eq!(
                protected.admits(remote.parse().unwrap()),
                Ok(()),
                "{remote}"
            );
        }
        assert_eq!(Access::new(None, false).admits(outside), Ok(()));
        assert_eq!(Access::new(Some("pw"), true).admits(outside), Ok(()));
    }

    #[test]
    fn secrets_compare_equal_only_when_every_byte_and_the_length_agree() {
        assert!(same_secret(b"", b""));
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
        assert!(!same_secret(b"abc", b"abc\0"));
        assert!(!same_secret(b"", b"\0"));
    }

    #[test]
    fn credentials_never_show_the_password_in_debug_output() {
        let shown = format!("{:?}", credentials(Some("default"), "hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
