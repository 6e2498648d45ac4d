//! RESP commands: what a frame asks for ([`Command::from_frame`]), with Redis's arity
//! checks and error texts, and how a store command becomes ops.

use super::auth::Credentials;
use super::scan::ScanArgs;
use super::*;
use crate::redis_cluster::ClusterCommand;
use crate::resp::{Frame, Protocol};
use bytes::Bytes;
use kv_engine::kv::Op;

/// A parsed client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// GET key
    Get(Bytes),
    /// SET key value
    Set(Bytes, Bytes),
    /// APPEND key value
    Append(Bytes, Bytes),
    /// DEL key [key ...]
    Del(Vec<Bytes>),
    /// EXISTS key [key ...]
    Exists(Vec<Bytes>),
    /// MGET key [key ...]
    MGet(Vec<Bytes>),
    /// PING \[message\]
    Ping(Option<Bytes>),
    /// ECHO message
    Echo(Bytes),
    /// INFO \[section ...\] (lower-cased)
    Info(Vec<String>),
    /// QUIT
    Quit,
    /// SELECT db (only 0 exists)
    Select(Bytes),
    /// DBSIZE
    DbSize,
    /// SCAN cursor \[MATCH pattern\] \[COUNT n\] \[TYPE type\] ([`super::scan`]).
    Scan(ScanArgs),
    /// KEYS pattern ([`super::scan`]).
    Keys(Bytes),
    /// COMMAND \[subcommand ...\]: the commands and their key positions
    /// ([`crate::redis_cluster::command_reply`]).
    CommandInfo(Vec<Bytes>),
    /// CLUSTER subcommand (cluster mode only).
    Cluster(ClusterCommand),
    /// ASKING: the next command is served here even if this node's map names another
    /// node for its slot (cluster mode only).
    Asking,
    /// READONLY / READWRITE (cluster mode only; accepted, reads are always consistent).
    ReadMode,
    /// HELLO \[protover \[AUTH username password\] \[SETNAME name\]\]: the protocol to
    /// switch to, if one is named, the credentials to authenticate with first, if given,
    /// and the connection's new name, if given.
    Hello {
        /// The protocol to switch to.
        protocol: Option<Protocol>,
        /// AUTH's user and password.
        auth: Option<Credentials>,
        /// SETNAME's name.
        name: Option<Bytes>,
    },
    /// AUTH \[username\] password ([`super::auth`]).
    Auth(Credentials),
    /// CLIENT SETNAME / GETNAME / ID / SETINFO.
    Client(ClientCommand),
    /// CONFIG GET pattern (answers with nothing configured)
    ConfigGet,
    /// MULTI, EXEC, DISCARD: refused, and what a client sends between MULTI and EXEC is
    /// discarded (see [`super::Transaction`]).
    Transaction(Transaction),
}

/// The commands that would make a Redis transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transaction {
    /// MULTI
    Multi,
    /// EXEC
    Exec,
    /// DISCARD
    Discard,
}

/// The CLIENT subcommands kv answers: those clients send on connect and those that read
/// back what they set. Any other is refused as Redis refuses an unknown subcommand, rather
/// than acknowledged without effect (a client told `+OK` to `CLIENT TRACKING ON` would
/// trust a cache nothing invalidates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    /// CLIENT SETNAME name (checked when run, as Redis checks it; empty clears the name).
    SetName(Bytes),
    /// CLIENT GETNAME: the name, or null.
    GetName,
    /// CLIENT ID: the connection's number.
    Id,
    /// CLIENT SETINFO LIB-NAME|LIB-VER value (accepted; kv keeps no client list).
    SetInfo,
}

impl ClientCommand {
    fn parse(args: &[Bytes]) -> Result<ClientCommand, CommandError> {
        let Some((sub, rest)) = args.split_first() else {
            return Err(arity("client"));
        };
        let lower = String::from_utf8_lossy(sub).to_ascii_lowercase();
        let arity = || arity(&format!("client|{lower}"));
        Ok(match (lower.as_str(), rest) {
            ("setname", [name]) => ClientCommand::SetName(name.clone()),
            ("getname", []) => ClientCommand::GetName,
            ("id", []) => ClientCommand::Id,
            ("setinfo", [attribute, _value]) => {
                let attribute = attribute.to_ascii_lowercase();
                if attribute != b"lib-name" && attribute != b"lib-ver" {
                    return Err(refused(format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(&attribute)
                    )));
                }
                ClientCommand::SetInfo
            }
            ("setname" | "getname" | "id" | "setinfo", _) => return Err(arity()),
            _ => {
                return Err(refused(format!(
                    "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                    String::from_utf8_lossy(sub)
                )))
            }
        })
    }
}

/// Whether Redis takes `name` as a client name: printable ASCII without spaces (Redis's
/// `validateClientName`); the reply if not.
pub(super) fn check_client_name(name: &[u8]) -> Result<(), String> {
    if name.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
        Ok(())
    } else {
        Err("ERR Client names cannot contain spaces, newlines or special characters.".into())
    }
}

/// Why a frame is not a command we run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The frame is not a command at all (not an array of bulk strings): the reply is
    /// `-ERR Protocol error` and the connection is closed, as Redis does.
    Protocol(String),
    /// A command this server does not run, or wrong arguments: an error reply, and the
    /// connection continues.
    Refused(String),
}

impl CommandError {
    /// The error reply's text.
    pub fn message(&self) -> &str {
        match self {
            CommandError::Protocol(m) | CommandError::Refused(m) => m,
        }
    }
}

fn refused(message: impl Into<String>) -> CommandError {
    CommandError::Refused(message.into())
}

pub(super) fn arity(name: &str) -> CommandError {
    refused(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

impl Command {
    /// Parses a client frame (an array of bulk strings).
    pub fn from_frame(frame: Frame) -> Result<Command, CommandError> {
        let Frame::Array(items) = frame else {
            return Err(CommandError::Protocol(
                "ERR Protocol error: expected an array of bulk strings".into(),
            ));
        };
        // Every element must be a bulk string, as Redis requires of a multibulk request:
        // anything else is refused with Redis's own words, naming the type byte.
        let mut args = Vec::with_capacity(items.len());
        for item in items {
            let got = match item {
                Frame::Bulk(b) => {
                    args.push(b);
                    continue;
                }
                // `$-1` (`*-1` parses to the same frame): a bulk length Redis refuses.
                Frame::Null => {
                    return Err(CommandError::Protocol(
                        "ERR Protocol error: invalid bulk length".into(),
                    ))
                }
                Frame::Simple(_) => '+',
                Frame::Error(_) => '-',
                Frame::Integer(_) => ':',
                Frame::Array(_) => '*',
                Frame::Map(_) => '%',
            };
            return Err(CommandError::Protocol(format!(
                "ERR Protocol error: expected '$', got '{got}'"
            )));
        }
        let Some(name) = args.first() else {
            return Err(refused("ERR empty command"));
        };
        let given = name;
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let rest = &args[1..];
        let one = |n: &str| -> Result<Bytes, CommandError> {
            match rest {
                [a] => Ok(a.clone()),
                _ => Err(arity(n)),
            }
        };
        let two = |n: &str| -> Result<(Bytes, Bytes), CommandError> {
            match rest {
                [a, b] => Ok((a.clone(), b.clone())),
                _ => Err(arity(n)),
            }
        };
        let many = |n: &str| -> Result<Vec<Bytes>, CommandError> {
            if rest.is_empty() {
                Err(arity(n))
            } else {
                Ok(rest.to_vec())
            }
        };
        Ok(match name.as_str() {
            "get" => Command::Get(one("get")?),
            "set" => match rest {
                [k, v] => Command::Set(k.clone(), v.clone()),
                [_, _, ..] => {
                    return Err(refused(
                        "ERR SET options (EX, PX, NX, XX, ...) are not supported",
                    ))
                }
                _ => return Err(arity("set")),
            },
            "append" => {
                let (k, v) = two("append")?;
                Command::Append(k, v)
            }
            "del" | "unlink" => Command::Del(many(&name)?),
            "exists" => Command::Exists(many("exists")?),
            "mget" => Command::MGet(many("mget")?),
            "ping" => match rest {
                [] => Command::Ping(None),
                [m] => Command::Ping(Some(m.clone())),
                _ => return Err(arity("ping")),
            },
            "echo" => Command::Echo(one("echo")?),
            "info" => Command::Info(
                rest.iter()
                    .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
                    .collect(),
            ),
            "quit" => Command::Quit,
            "select" => Command::Select(one("select")?),
            "dbsize" if rest.is_empty() => Command::DbSize,
            "dbsize" => return Err(arity("dbsize")),
            "scan" => Command::Scan(ScanArgs::parse(rest)?),
            "keys" => Command::Keys(one("keys")?),
            "command" => Command::CommandInfo(rest.to_vec()),
            "cluster" => Command::Cluster(ClusterCommand::parse(rest).map_err(refused)?),
            "asking" if rest.is_empty() => Command::Asking,
            "readonly" | "readwrite" if rest.is_empty() => Command::ReadMode,
            "asking" | "readonly" | "readwrite" => return Err(arity(&name)),
            "hello" => {
                let (protocol, auth, name) = hello_options(rest)?;
                Command::Hello {
                    protocol,
                    auth,
                    name,
                }
            }
            "auth" => Command::Auth(match rest {
                [password] => Credentials {
                    user: None,
                    password: password.clone(),
                },
                [user, password] => Credentials {
                    user: Some(user.clone()),
                    password: password.clone(),
                },
                [] => return Err(arity("auth")),
                _ => return Err(refused("ERR syntax error")),
            }),
            "client" => Command::Client(ClientCommand::parse(rest)?),
            "multi" | "exec" | "discard" if !rest.is_empty() => return Err(arity(&name)),
            "multi" => Command::Transaction(Transaction::Multi),
            "exec" => Command::Transaction(Transaction::Exec),
            "discard" => Command::Transaction(Transaction::Discard),
            "config" => match rest.split_first() {
                None => return Err(arity("config")),
                Some((sub, patterns)) if sub.eq_ignore_ascii_case(b"get") => {
                    if patterns.is_empty() {
                        return Err(arity("config|get"));
                    }
                    Command::ConfigGet
                }
                Some(_) => return Err(refused("ERR only CONFIG GET is supported")),
            },
            _ => return Err(refused(unknown_command(given, rest))),
        })
    }
}

/// Redis's reply to an unknown command: its name as sent, and its arguments, each quoted,
/// until they pass 128 bytes (`processCommand`'s `rejectCommandFormat`).
fn unknown_command(name: &[u8], args: &[Bytes]) -> String {
    const SHOWN_MAX: usize = 128;
    let clipped = |text: &[u8], max: usize| {
        String::from_utf8_lossy(&text[..text.len().min(max)]).into_owned()
    };
    let mut shown = String::new();
    for arg in args {
        if shown.len() >= SHOWN_MAX {
            break;
        }
        shown.push_str(&format!("'{}' ", clipped(arg, SHOWN_MAX - shown.len())));
    }
    format!(
        "ERR unknown command '{}', with args beginning with: {shown}",
        clipped(name, SHOWN_MAX)
    )
}

impl Command {
    /// The command's name in INFO's commandstats and `/metrics` (one of
    /// [`crate::metrics::RESP_COMMANDS`]).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Get(_) => "get",
            Command::Set(..) => "set",
            Command::Append(..) => "append",
            Command::Del(_) => "del",
            Command::Exists(_) => "exists",
            Command::MGet(_) => "mget",
            Command::Ping(_) => "ping",
            Command::Echo(_) => "echo",
            Command::Info(_) => "info",
            Command::Quit => "quit",
            Command::Select(_) => "select",
            Command::DbSize => "dbsize",
            Command::Scan(_) => "scan",
            Command::Keys(_) => "keys",
            Command::CommandInfo(_) => "command",
            Command::Cluster(_) => "cluster",
            Command::Asking => "asking",
            Command::ReadMode => "readonly",
            Command::Hello { .. } => "hello",
            Command::Auth(_) => "auth",
            Command::Client(_) => "client",
            Command::ConfigGet => "config",
            Command::Transaction(Transaction::Multi) => "multi",
            Command::Transaction(Transaction::Exec) => "exec",
            Command::Transaction(Transaction::Discard) => "discard",
        }
    }

    /// A store command's ops, and how its reply is made from theirs; any other command
    /// back as it is.
    pub(super) fn into_ops(self) -> Result<(Reduce, Vec<Op>), Command> {
        let gets = |keys: Vec<Bytes>| keys.into_iter().map(|key| Op::Get { key }).collect();
        Ok(match self {
            Command::Get(key) => (Reduce::Get, vec![Op::Get { key }]),
            Command::Set(key, value) => (Reduce::Set, vec![Op::Put { key, value }]),
            Command::Append(key, value) => (Reduce::Append, vec![Op::Append { key, value }]),
            Command::Del(keys) => (
                Reduce::Count {
                    deletes: true,
                    count: 0,
                    error: None,
                },
                keys.into_iter().map(|key| Op::Delete { key }).collect(),
            ),
            Command::Exists(keys) => (
                Reduce::Count {
                    deletes: false,
                    count: 0,
                    error: None,
                },
                gets(keys),
            ),
            Command::MGet(keys) => (Reduce::MGet, gets(keys)),
            other => return Err(other),
        })
    }
}

/// The protocol `HELLO`'s arguments ask for, the credentials its AUTH option gives and
/// the name its SETNAME option gives, checking the options after it as Redis does.
#[allow(clippy::type_complexity)]
pub(super) fn hello_options(
    args: &[Bytes],
) -> Result<(Option<Protocol>, Option<Credentials>, Option<Bytes>), CommandError> {
    let Some((version, mut options)) = args.split_first() else {
        return Ok((None, None, None));
    };
    let protocol = match std::str::from_utf8(version).ok().map(str::parse::<i64>) {
        Some(Ok(2)) => Protocol::Resp2,
        Some(Ok(3)) => Protocol::Resp3,
        Some(Ok(_)) => return Err(refused("NOPROTO unsupported protocol version")),
        _ => {
            return Err(refused(
                "ERR Protocol version is not an integer or out of range",
            ))
        }
    };
    let mut auth = None;
    let mut name = None;
    while let Some((option, rest)) = options.split_first() {
        let taken = match (option.to_ascii_lowercase().as_slice(), rest) {
            (b"auth", [user, password, ..]) => {
                auth = Some(Credentials {
                    user: Some(user.clone()),
                    password: password.clone(),
                });
                3
            }
            (b"setname", [given, ..]) => {
                name = Some(given.clone());
                2
            }
            _ => {
                return Err(refused(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(option)
                )))
            }
        };
        options = &options[taken..];
    }
    Ok((Some(protocol), auth, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Result<Command, CommandError> {
        Command::from_frame(Frame::Array(
            args.iter()
                .map(|a| Frame::Bulk(Bytes::copy_from_slice(a.as_bytes())))
                .collect(),
        ))
    }

    #[test]
    fn commands_parse_case_insensitively_with_arity_checks() {
        assert_eq!(
            cmd(&["GeT", "k"]),
            Ok(Command::Get(Bytes::from_static(b"k")))
        );
        assert!(matches!(cmd(&["set", "k", "v"]), Ok(Command::Set(..))));
        assert_eq!(
            cmd(&["get"]).unwrap_err().message(),
            "ERR wrong number of arguments for 'get' command"
        );
        assert!(cmd(&["set", "k", "v", "EX", "10"])
            .unwrap_err()
            .message()
            .contains("not supported"));
        assert!(matches!(cmd(&["del", "a", "b"]), Ok(Command::Del(keys)) if keys.len() == 2));
    }

    #[test]
    fn unknown_commands_are_named_as_sent_with_their_arguments_as_redis_names_them() {
        assert_eq!(
            cmd(&["FooBar", "a", "b"]).unwrap_err().message(),
            "ERR unknown command 'FooBar', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            cmd(&["nope"]).unwrap_err().message(),
            "ERR unknown command 'nope', with args beginning with: "
        );
        let long = "x".repeat(100);
        assert_eq!(
            cmd(&["nope", &long, &long, "never"]).unwrap_err().message(),
            format!(
                "ERR unknown command 'nope', with args beginning with: '{long}' '{}' ",
                "x".repeat(128 - 103)
            )
        );
        assert_eq!(
            cmd(&["dbsize", "x"]).unwrap_err().message(),
            "ERR wrong number of arguments for 'dbsize' command"
        );
        assert_eq!(
            cmd(&["config"]).unwrap_err().message(),
            "ERR wrong number of arguments for 'config' command"
        );
        assert_eq!(
            cmd(&["CONFIG", "GET"]).unwrap_err().message(),
            "ERR wrong number of arguments for 'config|get' command"
        );
        assert_eq!(cmd(&["config", "get", "maxmemory"]), Ok(Command::ConfigGet));
    }

    #[test]
    fn unknown_commands_get_redis_style_errors() {
        assert_eq!(
            cmd(&["flushall", "async"]),
            Err(CommandError::Refused(
                "ERR unknown command 'flushall', with args beginning with: 'async' ".into()
            ))
        );
    }

    #[test]
    fn frames_that_are_not_arrays_of_strings_are_protocol_errors() {
        for frame in [
            Frame::Integer(3),
            Frame::Null,
            Frame::Array(vec![
                Frame::Bulk(Bytes::from_static(b"GET")),
                Frame::Array(vec![]),
            ]),
            Frame::Array(vec![Frame::Null]),
        ] {
            assert!(
                matches!(
                    Command::from_frame(frame.clone()),
                    Err(CommandError::Protocol(_))
                ),
                "{frame:?}"
            );
        }
        // An element that is not a bulk string is refused in Redis's words, even when
        // its text would make a command.
        for (element, byte) in [
            (Frame::Integer(5), ':'),
            (Frame::Simple("PING".into()), '+'),
            (Frame::Error("PING".into()), '-'),
            (Frame::Array(vec![]), '*'),
        ] {
            assert_eq!(
                Command::from_frame(Frame::Array(vec![element])),
                Err(CommandError::Protocol(format!(
                    "ERR Protocol error: expected '$', got '{byte}'"
                )))
            );
        }
        assert_eq!(
            Command::from_frame(Frame::Array(vec![Frame::Null])),
            Err(CommandError::Protocol(
                "ERR Protocol error: invalid bulk length".into()
            ))
        );
    }

    #[test]
    fn auth_takes_a_password_or_a_user_and_a_password_as_redis_does() {
        let auth = |user: Option<&'static str>| {
            Ok(Command::Auth(Credentials {
                user: user.map(|u| Bytes::from_static(u.as_bytes())),
                password: Bytes::from_static(b"pw"),
            }))
        };
        assert_eq!(cmd(&["AUTH", "pw"]), auth(None));
        assert_eq!(cmd(&["auth", "default", "pw"]), auth(Some("default")));
        assert_eq!(
            cmd(&["auth"]).unwrap_err().message(),
            "ERR wrong number of arguments for 'auth' command"
        );
        assert_eq!(
            cmd(&["auth", "a", "b", "c"]).unwrap_err().message(),
            "ERR syntax error"
        );
    }

    #[test]
    fn hello_chooses_a_protocol_version_and_checks_its_options() {
        let hello = |protocol, auth| {
            Ok(Command::Hello {
                protocol,
                auth,
                name: None,
            })
        };
        assert_eq!(cmd(&["hello"]), hello(None, None));
        assert_eq!(cmd(&["HELLO", "3"]), hello(Some(Protocol::Resp3), None));
        assert_eq!(
            cmd(&["hello", "2", "AUTH", "default", "pw", "SETNAME", "app"]),
            Ok(Command::Hello {
                protocol: Some(Protocol::Resp2),
                auth: Some(Credentials {
                    user: Some(Bytes::from_static(b"default")),
                    password: Bytes::from_static(b"pw"),
                }),
                name: Some(Bytes::from_static(b"app")),
            })
        );
        assert!(cmd(&["hello", "4"])
            .unwrap_err()
            .message()
            .starts_with("NOPROTO"));
        assert!(cmd(&["hello", "three"])
            .unwrap_err()
            .message()
            .contains("not an integer"));
        assert!(cmd(&["hello", "3", "AUTH", "only-user"])
            .unwrap_err()
            .message()
            .contains("Syntax error in HELLO option 'AUTH'"));
    }

    #[test]
    fn client_runs_its_known_subcommands_and_refuses_the_others_as_redis_does() {
        assert_eq!(
            cmd(&["client", "SETNAME", "app"]),
            Ok(Command::Client(ClientCommand::SetName(Bytes::from_static(
                b"app"
            ))))
        );
        assert_eq!(
            cmd(&["CLIENT", "getname"]),
            Ok(Command::Client(ClientCommand::GetName))
        );
        assert_eq!(
            cmd(&["client", "id"]),
            Ok(Command::Client(ClientCommand::Id))
        );
        assert_eq!(
            cmd(&["client", "setinfo", "LIB-NAME", "redis-py"]),
            Ok(Command::Client(ClientCommand::SetInfo))
        );
        assert_eq!(
            cmd(&["client"]).unwrap_err().message(),
            "ERR wrong number of arguments for 'client' command"
        );
        assert_eq!(
            cmd(&["client", "GETNAME", "x"]).unwrap_err().message(),
            "ERR wrong number of arguments for 'client|getname' command"
        );
        assert_eq!(
            cmd(&["client", "setinfo", "color", "red"])
                .unwrap_err()
                .message(),
            "ERR Unrecognized option 'color'"
        );
        for sub in ["TRACKING", "list", "info", "kill", "no-evict"] {
            assert_eq!(
                cmd(&["client", sub, "on"]).unwrap_err().message(),
                format!("ERR unknown subcommand '{sub}'. Try CLIENT HELP."),
            );
        }
        assert!(check_client_name(b"app-1").is_ok());
        assert!(check_client_name(b"").is_ok());
        for bad in [&b"a b"[..], b"a\nb", b"\xff"] {
            assert!(check_client_name(bad).is_err(), "{bad:?}");
        }
    }
}
