//! The framing shared by snapshot files and state-transfer chunks: a sequence of
//!
//! ```text
//! length: u32 LE | section: u8 | body (length bytes, postcard)
//! ```
//!
//! A section says which part of the replica's state a frame belongs to (the snapshot
//! header, the Paxos acceptor, the applied state's image, the end marker). Frames are
//! produced one at a time from frozen copies and consumed one at a time, so no side ever
//! holds a whole encoded state. The reader refuses a length that runs past the end and an
//! unknown section; checksums are the container's (the snapshot file's CRC, TCP's).

use std::io::{self, Write};

/// Which part of the state a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    /// The snapshot header: format version, peer memory, fence, boot.
    Header = 1,
    /// The Paxos acceptor's durable state.
    Acceptor = 2,
    /// The applied state's image.
    Image = 3,
    /// The last frame of a snapshot.
    End = 4,
}

impl Section {
    fn from_byte(byte: u8) -> Option<Section> {
        match byte {
            1 => Some(Section::Header),
            2 => Some(Section::Acceptor),
            3 => Some(Section::Image),
            4 => Some(Section::End),
            _ => None,
        }
    }
}

/// Bytes before a frame's body.
pub(crate) const FRAME_HEADER_BYTES: usize = 5;

/// Appends one frame to `out`.
pub(crate) fn push(out: &mut Vec<u8>, section: Section, body: &[u8]) {
    out.extend_from_slice(&frame_len(body).to_le_bytes());
    out.push(section as u8);
    out.extend_from_slice(body);
}

/// Writes one frame to `out`.
pub(crate) fn write(out: &mut dyn Write, section: Section, body: &[u8]) -> io::Result<()> {
    out.write_all(&frame_len(body).to_le_bytes())?;
    out.write_all(&[section as u8])?;
    out.write_all(body)
}

fn frame_len(body: &[u8]) -> u32 {
    u32::try_from(body.len()).expect("a frame body is far below 4 GiB")
}

/// Reads frames back, in order.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, offset: 0 }
    }

    /// Bytes read so far (for error messages).
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(Section, &'a [u8]), String>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.bytes[self.offset..];
        if rest.is_empty() {
            return None;
        }
        if rest.len() < FRAME_HEADER_BYTES {
            self.offset = self.bytes.len();
            return Some(Err("a frame header is cut short".into()));
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let Some(section) = Section::from_byte(rest[4]) else {
            let byte = rest[4];
            self.offset = self.bytes.len();
            return Some(Err(format!("unknown frame section {byte}")));
        };
        let Some(body) = rest.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len) else {
            self.offset = self.bytes.len();
            return Some(Err(format!("a frame of {len} bytes runs past the end")));
        };
        self.offset += FRAME_HEADER_BYTES + len;
        Some(Ok((section, body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_damage_is_an_error() {
        let mut out = Vec::new();
        push(&mut out, Section::Header, b"head");
        push(&mut out, Section::Image, b"");
        let mut written = Vec::new();
        write(&mut written, Section::End, b"e").unwrap();
        out.extend_from_slice(&written);
        let frames: Vec<_> = Reader::new(&out).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            frames,
            vec![
                (Section::Header, &b"head"[..]),
                (Section::Image, &b""[..]),
                (Section::End, &b"e"[..])
            ]
        );
        assert!(Reader::new(&out[..out.len() - 1]).any(|f| f.is_err()));
        assert!(Reader::new(&out[..3]).any(|f| f.is_err()));
        let mut bad = out.clone();
        bad[4] = 9;
        assert!(Reader::new(&bad).next().unwrap().is_err());
    }
}
