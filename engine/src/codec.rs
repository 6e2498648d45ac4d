//! The one place the engine chooses its encoding: serde + postcard (a specified, stable
//! wire format, which matters for bytes that stay on disk). Swap the format here only.

use serde::{de::DeserializeOwned, Serialize};

/// Encodes a value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> crate::Result<Vec<u8>> {
    Ok(postcard::to_stdvec(value)?)
}

/// Decodes a value, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> crate::Result<T> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if !rest.is_empty() {
        return Err(crate::Error::Invalid(format!(
            "{} trailing bytes after value",
            rest.len()
        )));
    }
    Ok(value)
}
