//! Who may speak the native protocol: the cluster secret, and the challenge–response every
//! connection starts with.
//!
//! A node's one native listener serves its peers (whose messages vote and apply) and native
//! clients (whose requests write). A cluster id alone is no proof of anything: it is in the
//! cluster file, which need not be secret, and it crosses the wire. So `kv init` also
//! writes a random *cluster secret* beside the cluster file ([`SECRET_FILE`], mode 0600),
//! and both ends of every native connection prove they know it before anything else is
//! said, without sending it:
//!
//! 1. The connecting side sends `Hello` (a peer: its node id) or `ClientHello`, with the
//!    cluster id, the node it means to reach, and a fresh random nonce.
//! 2. The listener checks the cluster id and that it is that node, and answers
//!    `Challenge`: a nonce of its own and its proof, an HMAC-SHA256 under the secret of the
//!    whole exchange (see [`Transcript`]).
//! 3. The connecting side checks the listener's proof (so it never talks to an impostor)
//!    and answers `Proof`: its own HMAC of the same exchange, labelled as the caller's.
//! 4. The listener checks it. Only then does it hand the connection's frames to a core.
//!
//! Each proof covers the cluster id, the role (peer or client), the caller's and the
//! listener's node ids, both nonces and which side is proving: a recorded exchange does
//! not verify against a new nonce (no replay), and the listener's proof is never the
//! caller's (no reflection), nor one node's another's. Proofs are checked in constant time
//! (`hmac`'s `verify_slice`).
//!
//! What it does not do: encrypt or authenticate the traffic after the handshake. Anyone who
//! can read the network sees keys and values; anyone who can write to it can take over an
//! established connection. Run a cluster on a private network or through a tunnel.
//!
//! A secret file is text: at least [`SECRET_BYTES_MIN`] characters (surrounding whitespace
//! is ignored; `kv init` writes 64 hex digits). It must be its owner's alone: a file that
//! its group or others may read, a missing file and a short one are errors naming the file.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::config::ConfigError;
use crate::wire::{self, Frame};

/// Name of the cluster secret's file, in the cluster file's directory.
pub const SECRET_FILE: &str = "cluster.secret";
/// Shortest secret accepted, in bytes (characters) after trimming whitespace.
pub const SECRET_BYTES_MIN: usize = 32;
/// Random bytes `kv init` puts in a new secret (written as twice as many hex digits).
pub const SECRET_RANDOM_BYTES: usize = 32;
/// How long either side of a new connection waits for the other's next handshake frame.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A handshake nonce: fresh random bytes from one side.
pub type Nonce = [u8; 32];
/// An HMAC-SHA256 proof.
pub type Proof = [u8; 32];

/// What a connection must prove it knows: the cluster's id and secret. The secret is never
/// logged: `Debug` hides it.
#[derive(Clone)]
pub struct ClusterKey {
    cluster_id: u64,
    secret: Arc<[u8]>,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKey")
            .field("cluster_id", &self.cluster_id)
            .field("secret", &"<hidden>")
            .finish()
    }
}

impl ClusterKey {
    /// The key of cluster `cluster_id` with secret `secret`.
    pub fn new(cluster_id: u64, secret: &[u8]) -> ClusterKey {
        ClusterKey {
            cluster_id,
            secret: Arc::from(secret),
        }
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }
}

/// A fresh random secret, as `kv init` writes it: [`SECRET_RANDOM_BYTES`] in hex.
pub fn random_secret() -> Result<String, String> {
    let mut bytes = [0u8; SECRET_RANDOM_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a cluster secret: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `secret` to `path`, readable and writable by its owner only from the first byte.
pub fn write_secret(path: &Path, secret: &str) -> Result<(), ConfigError> {
    save_secret(path, secret, false)
}

/// Writes a fresh random secret to `path`, which must not exist yet: the secret of a
/// cluster that has none (one made before secrets), which is then copied to its other
/// machines. Refuses, changing nothing, if the file is there, since replacing a running
/// cluster's secret would shut its own nodes and clients out.
pub fn create_secret(path: &Path) -> Result<(), ConfigError> {
    let secret = random_secret().map_err(|message| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    })?;
    save_secret(path, &secret, true)
}

/// Writes `secret` to `path` at mode 0600 and syncs it; with `new`, only if there was no
/// such file.
fn save_secret(path: &Path, secret: &str, new: bool) -> Result<(), ConfigError> {
    let io = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            return ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "a cluster secret is already there; refusing to replace it (the \
                          nodes and clients that read it would be shut out)"
                    .to_string(),
            };
        }
        ConfigError::Io {
            path: path.to_path_buf(),
            source,
        }
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    let mut file = options.open(path).map_err(io)?;
    // `mode` applies only to a new file: an old one keeps its permissions unless set.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    file.write_all(format!("{secret}\n").as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)
}

/// Reads the secret at `path`: its owner's alone, at least [`SECRET_BYTES_MIN`] bytes.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(invalid(format!(
                "no cluster secret: every node and native client of a cluster needs the \
                 secret `kv init` writes beside the cluster file (copy it here from the \
                 cluster's other machines, mode 0600; a cluster made before secrets gets \
                 one from `kv secret`) ({e})"
            )))
        }
        Err(source) => {
            return Err(ConfigError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(invalid(format!(
            "the cluster secret has permissions {mode:04o}: it must be readable by its owner \
             only (chmod 600 {})",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let secret = bytes.trim_ascii();
    if secret.len() < SECRET_BYTES_MIN {
        return Err(invalid(format!(
            "the cluster secret has {} characters; it needs at least {SECRET_BYTES_MIN}",
            secret.len()
        )));
    }
    Ok(secret.to_vec())
}

/// Who opens a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The node with this id, whose messages go to the listener's core.
    Peer(u32),
    /// A native client.
    Client,
}

/// Which side a proof is from: each side's proof is labelled differently, so neither can
/// be reflected back as the other's.
#[derive(Debug, Clone, Copy)]
enum Side {
    Listener,
    Caller,
}

/// Everything one handshake is about; both proofs are HMACs of it, each labelled with its
/// side.
#[derive(Debug, Clone, Copy)]
pub struct Transcript {
    /// Who opens the connection.
    pub caller: Caller,
    /// The node it means to reach.
    pub to: u32,
    /// The caller's nonce.
    pub caller_nonce: Nonce,
    /// The listener's nonce.
    pub listener_nonce: Nonce,
}

impl Transcript {
    fn mac(&self, key: &ClusterKey, side: Side) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key.secret).expect("HMAC takes any key");
        mac.update(b"kv native handshake v1\0");
        mac.update(match side {
            Side::Listener => b"listener",
            Side::Caller => b"caller\0\0",
        });
        mac.update(&key.cluster_id.to_be_bytes());
        let (role, from) = match self.caller {
            Caller::Peer(node) => (0u8, node),
            Caller::Client => (1u8, u32::MAX),
        };
        mac.update(&[role]);
        mac.update(&from.to_be_bytes());
        mac.update(&self.to.to_be_bytes());
        mac.update(&self.caller_nonce);
        mac.update(&self.listener_nonce);
        mac
    }

    /// Side `side`'s proof.
    fn prove(&self, key: &ClusterKey, side: Side) -> Proof {
        self.mac(key, side).finalize().into_bytes().into()
    }

    /// Whether `proof` is side `side`'s, compared in constant time.
    fn verify(&self, key: &ClusterKey, side: Side, proof: &[u8]) -> Result<(), String> {
        self.mac(key, side)
            .verify_slice(proof)
            .map_err(|_| "authentication failed: wrong cluster secret".to_string())
    }

    /// The listener's proof.
    pub fn listener_proof(&self, key: &ClusterKey) -> Proof {
        self.prove(key, Side::Listener)
    }

    /// The caller's proof.
    pub fn caller_proof(&self, key: &ClusterKey) -> Proof {
        self.prove(key, Side::Caller)
    }

    /// Checks the listener's proof.
    pub fn verify_listener(&self, key: &ClusterKey, proof: &[u8]) -> Result<(), String> {
        self.verify(key, Side::Listener, proof)
    }

    /// Checks the caller's proof.
    pub fn verify_caller(&self, key: &ClusterKey, proof: &[u8]) -> Result<(), String> {
        self.verify(key, Side::Caller, proof)
    }
}

/// A fresh random nonce.
pub fn nonce() -> Nonce {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).expect("the operating system's random source");
    nonce
}

/// The connecting side of a handshake, without I/O: its first frame, then its answer to
/// the listener's challenge.
#[derive(Debug)]
pub struct Dialing {
    key: ClusterKey,
    caller: Caller,
    to: u32,
    nonce: Nonce,
}

impl Dialing {
    /// A handshake as `caller` with node `to` of `key`'s cluster, with a fresh nonce.
    pub fn new(key: &ClusterKey, caller: Caller, to: u32) -> Dialing {
        Dialing {
            key: key.clone(),
            caller,
            to,
            nonce: nonce(),
        }
    }

    /// The first frame: `Hello` or `ClientHello`.
    pub fn hello<M, Q, R>(&self) -> Frame<M, Q, R> {
        let cluster_id = self.key.cluster_id;
        match self.caller {
            Caller::Peer(node) => Frame::Hello {
                cluster_id,
                node,
                to: self.to,
                nonce: self.nonce,
            },
            Caller::Client => Frame::ClientHello {
                cluster_id,
                to: self.to,
                nonce: self.nonce,
            },
        }
    }

    /// Checks the listener's `Challenge` and returns the `Proof` frame to send.
    pub fn answer<M, Q, R>(&self, challenge: Frame<M, Q, R>) -> Result<Frame<M, Q, R>, String> {
        let Frame::Challenge { nonce, proof } = challenge else {
            return Err(format!(
                "expected a Challenge, got {}",
                wire::frame_name(&challenge)
            ));
        };
        let transcript = Transcript {
            caller: self.caller,
            to: self.to,
            caller_nonce: self.nonce,
            listener_nonce: nonce,
        };
        transcript
            .verify_listener(&self.key, &proof)
            .map_err(|e| format!("the node did not prove it knows the secret ({e})"))?;
        Ok(Frame::Proof {
            proof: transcript.caller_proof(&self.key),
        })
    }
}

/// Opens the native protocol on a new connection to node `to`, as `caller`: the whole
/// handshake (within [`HANDSHAKE_TIMEOUT`] for each answer, with frames of at most
/// [`wire::HELLO_FRAME_BYTES_MAX`] meanwhile). On success the connection takes frames of up
/// to [`wire::FRAME_BYTES_MAX`].
pub async fn introduce<T: AsyncRead + AsyncWrite + Unpin>(
    framed: &mut Framed<T, LengthDelimitedCodec>,
    key: &ClusterKey,
    caller: Caller,
    to: u32,
) -> std::io::Result<()> {
    let dialing = Dialing::new(key, caller, to);
    framed
        .codec_mut()
        .set_max_frame_length(wire::HELLO_FRAME_BYTES_MAX);
    let hello = wire::encode(&dialing.hello::<(), (), ()>()).map_err(std::io::Error::other)?;
    framed.send(hello).await?;
    let challenge = match tokio::time::timeout(HANDSHAKE_TIMEOUT, framed.next()).await {
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no Challenge within {HANDSHAKE_TIMEOUT:?}"),
            ))
        }
        Ok(None) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the node closed the connection during the handshake (wrong cluster id or \
                 secret?)",
            ))
        }
        Ok(Some(body)) => body?,
    };
    let challenge = wire::decode::<(), (), ()>(&challenge)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let proof = dialing
        .answer(challenge)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
    framed
        .send(wire::encode(&proof).map_err(std::io::Error::other)?)
        .await?;
    framed
        .codec_mut()
        .set_max_frame_length(wire::FRAME_BYTES_MAX);
    Ok(())
}

/// [`introduce`] on a blocking stream (for programs and tests that write frames
/// themselves): the same handshake, each frame a u32 big-endian length and its body, the
/// challenge at most [`wire::HELLO_FRAME_BYTES_MAX`]. Waits for the challenge as long as
/// the stream's read timeout allows.
pub fn introduce_blocking<S: std::io::Read + std::io::Write>(
    stream: &mut S,
    key: &ClusterKey,
    caller: Caller,
    to: u32,
) -> std::io::Result<()> {
    let dialing = Dialing::new(key, caller, to);
    let write = |stream: &mut S, frame: &Frame<(), (), ()>| -> std::io::Result<()> {
        let body = wire::encode(frame).map_err(std::io::Error::other)?;
        let len = u32::try_from(body.len()).map_err(std::io::Error::other)?;
        stream.write_all(&len.to_be_bytes())?;
        stream.write_all(&body)?;
        stream.flush()
    };
    write(stream, &dialing.hello())?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > wire::HELLO_FRAME_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a {len}-byte frame during the handshake"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    let challenge = wire::decode::<(), (), ()>(&body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let proof = dialing
        .answer(challenge)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
    write(stream, &proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &[u8]) -> ClusterKey {
        ClusterKey::new(7, secret)
    }

    fn transcript() -> Transcript {
        Transcript {
            caller: Caller::Peer(1),
            to: 2,
            caller_nonce: [1; 32],
            listener_nonce: [2; 32],
        }
    }

    #[test]
    fn a_proof_verifies_only_with_the_same_secret_side_and_transcript() {
        let secret = [b'x'; 32];
        let t = transcript();
        let proof = t.caller_proof(&key(&secret));
        assert_eq!(t.verify_caller(&key(&secret), &proof), Ok(()));
        assert!(t.verify_caller(&key(&[b'y'; 32]), &proof).is_err());
        assert!(
            t.verify_listener(&key(&secret), &proof).is_err(),
            "a caller's proof is not a listener's"
        );
        assert!(t
            .verify_caller(&ClusterKey::new(8, &secret), &proof)
            .is_err());
        let changed = [
            Transcript {
                caller: Caller::Peer(0),
                ..t
            },
            Transcript {
                caller: Caller::Client,
                ..t
            },
            Transcript { to: 0, ..t },
            Transcript {
                caller_nonce: [3; 32],
                ..t
            },
            Transcript {
                listener_nonce: [3; 32],
                ..t
            },
        ];
        for other in changed {
            assert!(
                other.verify_caller(&key(&secret), &proof).is_err(),
                "{other:?}"
            );
        }
        assert!(t.verify_caller(&key(&secret), &proof[..31]).is_err());
    }

    #[test]
    fn a_caller_refuses_a_listener_without_the_secret() {
        let right = key(&[b'x'; 32]);
        let dialing = Dialing::new(&right, Caller::Client, 0);
        let Frame::ClientHello { nonce, to, .. } = dialing.hello::<(), (), ()>() else {
            panic!("a client's hello")
        };
        let forged = Transcript {
            caller: Caller::Client,
            to,
            caller_nonce: nonce,
            listener_nonce: [9; 32],
        };
        let wrong: Frame<()> = Frame::Challenge {
            nonce: [9; 32],
            proof: forged.listener_proof(&key(&[b'y'; 32])),
        };
        assert!(dialing.answer(wrong).is_err());
        let genuine: Frame<()> = Frame::Challenge {
            nonce: [9; 32],
            proof: forged.listener_proof(&right),
        };
        match dialing.answer(genuine) {
            Ok(Frame::Proof { proof }) => assert_eq!(forged.verify_caller(&right, &proof), Ok(())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn secret_files_are_the_owners_alone_and_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRET_FILE);
        let missing = read_secret(&path).unwrap_err().to_string();
        assert!(missing.contains(SECRET_FILE), "{missing}");
        assert!(missing.contains("no cluster secret"), "{missing}");

        let secret = random_secret().unwrap();
        assert_eq!(secret.len(), 2 * SECRET_RANDOM_BYTES);
        assert_ne!(secret, random_secret().unwrap());
        write_secret(&path, &secret).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_secret(&path).unwrap(), secret.as_bytes());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let open = read_secret(&path).unwrap_err().to_string();
        assert!(
            open.contains("0640") && open.contains("chmod 600"),
            "{open}"
        );

        write_secret(&path, "  short\n").unwrap();
        let short = read_secret(&path).unwrap_err().to_string();
        assert!(short.contains("at least 32"), "{short}");
    }
}
