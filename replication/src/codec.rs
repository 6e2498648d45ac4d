//! The one place this crate chooses its encoding (messages, WAL records, snapshots): it
//! delegates to the engine's serde + postcard codec so the whole workspace shares one
//! format, and converts failures into this crate's [`CodecError`].

use serde::{de::DeserializeOwned, Serialize};

/// An encoding or decoding failure.
#[derive(Debug, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(#[from] pub kv_engine::Error);

/// Encodes a value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(kv_engine::codec::encode(value)?)
}

/// Decodes a value, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(kv_engine::codec::decode(bytes)?)
}
