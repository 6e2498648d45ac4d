//! RESP, the Redis serialisation protocol: frames as pure functions on bytes.
//!
//! Clients send commands as RESP2 arrays of bulk strings in either protocol version;
//! replies are encoded in the version the connection chose with `HELLO` ([`Protocol`]):
//! RESP3 adds reply types — here maps (`%`) and the null (`_`) — which RESP2 spells as a
//! flat array of keys and values and as the null bulk string (`$-1`).
//!
//! The RESP front door reads bytes into a buffer and asks [`Frame::check`] whether a whole
//! frame is buffered. `check` allocates nothing (an inline command line excepted, at most
//! [`LINE_BYTES_MAX`]) and answers `Ok` with the cursor just past the frame,
//! [`FrameError::Incomplete`] (read more bytes and ask again), or
//! [`FrameError::Invalid`] (close the connection, logging the reason). Only after `Ok`
//! does the caller run [`Frame::parse`], which builds the frame. Replies are encoded with
//! [`Frame::write_to`]. This is tokio-rs/mini-redis's layering; the tokio codec sits on
//! top, elsewhere.
//!
//! Besides RESP arrays, a top-level line that does not start with a RESP type byte is a
//! Redis *inline command* (`PING\r\n`, as typed into telnet and sent by some redis-cli
//! paths). It is split into arguments the way Redis's `sdssplitargs` does (whitespace
//! separated, `"..."` with backslash escapes, `'...'`) and parsed as an array of bulk
//! strings; an empty line is an empty array, which a command layer ignores as Redis does.
//!
//! # Invariants
//! - `check` returning `Ok` implies `parse` on the same bytes returns `Ok` and stops at the
//!   same position; both validate with the same helpers.
//! - No input makes either function panic, recurse deeper than the depth limit, or
//!   allocate more than a small multiple of the bytes actually buffered.
//! - `Incomplete` is only answered when a frame within the limits could still complete, so
//!   a caller never buffers more than the frame limit for one frame: declared lengths over
//!   a limit are `Invalid` as soon as their header is read, before their data arrives, and
//!   an over-long line is `Invalid` without waiting for its end.
//!
//! Every limit is a named constant ([`BULK_BYTES_MAX`], [`ARRAY_LEN_MAX`], [`DEPTH_MAX`],
//! [`LINE_BYTES_MAX`], [`FRAME_BYTES_MAX`]) gathered in [`Limits::DEFAULT`]; the `_within`
//! variants take lower ones.
//!
//! # Failure model
//! Malformed or oversized input is [`FrameError::Invalid`] with a reason; the connection
//! that sent it is closed by the caller. Nothing here does IO.

use std::io::Cursor;

use bytes::{BufMut, Bytes, BytesMut};

/// Largest bulk string accepted, in bytes (Redis's default `proto-max-bulk-len`).
pub const BULK_BYTES_MAX: usize = 512 * 1024 * 1024;

/// Largest array accepted, in elements.
pub const ARRAY_LEN_MAX: usize = 1024 * 1024;

/// Deepest nesting of arrays accepted; a top-level array is depth 1.
pub const DEPTH_MAX: usize = 32;

/// Longest line accepted (simple string, error, integer, length header or inline
/// command), in bytes, excluding its line ending (Redis's inline limit).
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// Largest whole frame accepted, in bytes (Redis's default client query buffer limit).
pub const FRAME_BYTES_MAX: usize = 1024 * 1024 * 1024;

/// The smallest encoding of any frame (`+\r\n`), used to bound preallocation.
const FRAME_BYTES_MIN: usize = 3;

/// The limits a reader enforces. [`Limits::DEFAULT`] is built from the constants above; a
/// server may lower them (for example from a configuration flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string, in bytes.
    pub bulk_bytes_max: usize,
    /// Largest array, in elements.
    pub array_len_max: usize,
    /// Deepest nesting of arrays; a top-level array is depth 1.
    pub depth_max: usize,
    /// Longest line (simple string, error, integer, header, inline command), in bytes.
    pub line_bytes_max: usize,
    /// Largest whole frame, in bytes.
    pub frame_bytes_max: usize,
}

impl Limits {
    /// The default limits: [`BULK_BYTES_MAX`], [`ARRAY_LEN_MAX`], [`DEPTH_MAX`],
    /// [`LINE_BYTES_MAX`], [`FRAME_BYTES_MAX`].
    pub const DEFAULT: Limits = Limits {
        bulk_bytes_max: BULK_BYTES_MAX,
        array_len_max: ARRAY_LEN_MAX,
        depth_max: DEPTH_MAX,
        line_bytes_max: LINE_BYTES_MAX,
        frame_bytes_max: FRAME_BYTES_MAX,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// The protocol version a connection speaks; it picks how replies are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2, what every connection starts with.
    #[default]
    Resp2,
    /// RESP3, chosen with `HELLO 3`.
    Resp3,
}

impl Protocol {
    /// The version number `HELLO` uses.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// One RESP value. Clients' frames parse to the RESP2 kinds; [`Frame::Map`] exists only
/// in replies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `+text\r\n`. Encoding replaces any CR or LF in the text with a space.
    Simple(String),
    /// `-text\r\n`. Encoding replaces any CR or LF in the text with a space.
    Error(String),
    /// `:n\r\n`.
    Integer(i64),
    /// `$len\r\nbytes\r\n`: a binary-safe string.
    Bulk(Bytes),
    /// Null: `$-1\r\n` (the null bulk string) in RESP2, `_\r\n` in RESP3. The null array
    /// `*-1\r\n` also parses to this.
    Null,
    /// `*len\r\n` followed by `len` frames.
    Array(Vec<Frame>),
    /// A map of `len` key/value pairs: `%len\r\n` then each key and value in RESP3, and a
    /// flat array of `2 * len` frames in RESP2 (as Redis answers `HELLO 2`).
    Map(Vec<(Frame, Frame)>),
}

/// Why a buffer does not hold a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The bytes so far are a valid beginning; more are needed.
    #[error("incomplete frame")]
    Incomplete,
    /// The bytes can never become a valid frame within the limits.
    #[error("invalid frame: {0}")]
    Invalid(String),
}

impl Frame {
    /// Confirms that `src`, from its position, starts with one whole frame, without
    /// building it. On `Ok` the cursor is just past the frame (its position minus the
    /// starting one is the frame's length); on `Err` the position is unspecified.
    pub fn check(src: &mut Cursor<&[u8]>) -> Result<(), FrameError> {
        Frame::check_within(src, &Limits::DEFAULT)
    }

    /// [`Frame::check`] with the given limits.
    pub fn check_within(src: &mut Cursor<&[u8]>, limits: &Limits) -> Result<(), FrameError> {
        let mut reader = Reader::new(src, limits);
        reader.check_top()?;
        src.set_position(reader.pos as u64);
        Ok(())
    }

    /// Reads one frame from `src`, advancing the cursor past it. Call after
    /// [`Frame::check`] succeeded; called alone it still validates everything and never
    /// panics. Bulk strings are copied out of the buffer.
    pub fn parse(src: &mut Cursor<&[u8]>) -> Result<Frame, FrameError> {
        Frame::parse_within(src, &Limits::DEFAULT)
    }

    /// [`Frame::parse`] with the given limits (use the ones `check` was given).
    pub fn parse_within(src: &mut Cursor<&[u8]>, limits: &Limits) -> Result<Frame, FrameError> {
        let mut reader = Reader::new(src, limits);
        let frame = reader.parse_top()?;
        src.set_position(reader.pos as u64);
        Ok(frame)
    }

    /// Appends this frame's RESP2 encoding to `dst`.
    pub fn write_to(&self, dst: &mut BytesMut) {
        self.write_as(Protocol::Resp2, dst)
    }

    /// Appends this frame's encoding in `protocol` to `dst`.
    pub fn write_as(&self, protocol: Protocol, dst: &mut BytesMut) {
        match self {
            Frame::Simple(text) => write_text(dst, b'+', text),
            Frame::Error(text) => write_text(dst, b'-', text),
            Frame::Integer(n) => {
                dst.put_u8(b':');
                write_decimal(dst, *n);
                dst.put_slice(b"\r\n");
            }
            Frame::Bulk(data) => {
                write_header(dst, b'$', data.len());
                dst.put_slice(data);
                dst.put_slice(b"\r\n");
            }
            Frame::Null => match protocol {
                Protocol::Resp2 => dst.put_slice(b"$-1\r\n"),
                Protocol::Resp3 => dst.put_slice(b"_\r\n"),
            },
            Frame::Array(items) => {
                write_header(dst, b'*', items.len());
                for item in items {
                    item.write_as(protocol, dst);
                }
            }
            Frame::Map(pairs) => {
                match protocol {
                    Protocol::Resp2 => write_header(dst, b'*', 2 * pairs.len()),
                    Protocol::Resp3 => write_header(dst, b'%', pairs.len()),
                }
                for (key, value) in pairs {
                    key.write_as(protocol, dst);
                    value.write_as(protocol, dst);
                }
            }
        }
    }

    /// The header of an array of `len` elements (the same in both versions), for replies
    /// written one element at a time.
    pub fn write_array_header(len: usize, dst: &mut BytesMut) {
        write_header(dst, b'*', len);
    }

    /// This frame's encoding.
    pub fn to_bytes(&self) -> Bytes {
        let mut dst = BytesMut::new();
        self.write_to(&mut dst);
        dst.freeze()
    }
}

fn invalid(reason: impl Into<String>) -> FrameError {
    FrameError::Invalid(reason.into())
}

/// A read position over a buffer, remembering where the frame started so the frame's
/// total size can be held to the frame limit.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    start: usize,
    limits: Limits,
}

impl<'a> Reader<'a> {
    fn new(src: &Cursor<&'a [u8]>, limits: &Limits) -> Reader<'a> {
        let buf = *src.get_ref();
        let pos = usize::try_from(src.position()).map_or(buf.len(), |p| p.min(buf.len()));
        Reader {
            buf,
            pos,
            start: pos,
            limits: *limits,
        }
    }

    fn over_budget(&self) -> FrameError {
        invalid(format!(
            "frame longer than {} bytes",
            self.limits.frame_bytes_max
        ))
    }

    fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// `Incomplete`, unless the bytes already buffered for this frame exceed the budget.
    fn need_more(&self) -> FrameError {
        if self.buf.len() - self.start > self.limits.frame_bytes_max {
            return self.over_budget();
        }
        FrameError::Incomplete
    }

    /// Refuses a frame that would end past the budget.
    fn within_budget(&self, end: usize) -> Result<(), FrameError> {
        if end - self.start > self.limits.frame_bytes_max {
            return Err(self.over_budget());
        }
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, FrameError> {
        let byte = *self.rest().first().ok_or_else(|| self.need_more())?;
        self.pos += 1;
        Ok(byte)
    }

    fn peek(&self) -> Result<u8, FrameError> {
        self.rest().first().copied().ok_or_else(|| self.need_more())
    }

    /// A RESP line: the bytes up to CR LF, which is consumed. A bare CR or LF is invalid.
    fn line(&mut self) -> Result<&'a [u8], FrameError> {
        let max = self.limits.line_bytes_max;
        let rest = self.rest();
        let window = &rest[..rest.len().min(max + 1)];
        let Some(end) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
            if rest.len() > max {
                return Err(invalid(format!("line longer than {max} bytes")));
            }
            return Err(self.need_more());
        };
        if rest[end] == b'\n' {
            return Err(invalid("line feed without carriage return"));
        }
        match rest.get(end + 1) {
            None => Err(self.need_more()),
            Some(b'\n') => {
                self.within_budget(self.pos + end + 2)?;
                self.pos += end + 2;
                Ok(&rest[..end])
            }
            Some(_) => Err(invalid("carriage return without line feed")),
        }
    }

    /// An inline command line: the bytes up to LF (which is consumed), minus a final CR.
    fn inline_line(&mut self) -> Result<&'a [u8], FrameError> {
        let max = self.limits.line_bytes_max;
        let too_long = || invalid(format!("inline command longer than {max} bytes"));
        let rest = self.rest();
        // Room for the longest line, a CR and the LF.
        let window = &rest[..rest.len().min(max + 2)];
        let Some(end) = window.iter().position(|&b| b == b'\n') else {
            if rest.len() > max + 1 {
                return Err(too_long());
            }
            return Err(self.need_more());
        };
        let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
        if line.len() > max {
            return Err(too_long());
        }
        self.within_budget(self.pos + end + 1)?;
        self.pos += end + 1;
        Ok(line)
    }

    /// A bulk string's body of `len` bytes and its CR LF. The budget is checked before
    /// waiting for the bytes, so an oversized declaration fails at once.
    fn bulk_body(&mut self, len: usize) -> Result<&'a [u8], FrameError> {
        let end = self.pos + len;
        self.within_budget(end + 2)?;
        let rest = self.rest();
        if rest.len() < len + 2 {
            // Fail early when the terminator has already arrived and is wrong.
            let terminator = rest.get(len..).unwrap_or_default();
            if !b"\r\n".starts_with(terminator) {
                return Err(invalid("bulk string not followed by CR LF"));
            }
            return Err(self.need_more());
        }
        if &rest[len..len + 2] != b"\r\n" {
            return Err(invalid("bulk string not followed by CR LF"));
        }
        self.pos = end + 2;
        Ok(&rest[..len])
    }

    /// The length in a `$` or `*` header; `None` for -1 (null).
    fn length(&mut self, max: usize, what: &str) -> Result<Option<usize>, FrameError> {
        let n = parse_integer(self.line()?)?;
        if n == -1 {
            return Ok(None);
        }
        let len = usize::try_from(n).map_err(|_| invalid(format!("negative {what} length")))?;
        if len > max {
            return Err(invalid(format!("{what} length {len} over limit {max}")));
        }
        Ok(Some(len))
    }

    fn check_top(&mut self) -> Result<(), FrameError> {
        if is_type_byte(self.peek()?) {
            return self.check_frame(0);
        }
        split_inline(self.inline_line()?).map(drop)
    }

    fn parse_top(&mut self) -> Result<Frame, FrameError> {
        if is_type_byte(self.peek()?) {
            return self.parse_frame(0);
        }
        let args = split_inline(self.inline_line()?)?;
        Ok(Frame::Array(
            args.into_iter()
                .map(|arg| Frame::Bulk(arg.into()))
                .collect(),
        ))
    }

    /// Validates one RESP frame nested `depth` arrays deep, allocating nothing.
    fn check_frame(&mut self, depth: usize) -> Result<(), FrameError> {
        match self.byte()? {
            b'+' | b'-' => text(self.line()?).map(drop),
            b':' => parse_integer(self.line()?).map(drop),
            b'$' => match self.length(self.limits.bulk_bytes_max, "bulk")? {
                Some(len) => self.bulk_body(len).map(drop),
                None => Ok(()),
            },
            b'*' => match self.length(self.limits.array_len_max, "array")? {
                Some(len) => {
                    self.nest(depth)?;
                    (0..len).try_for_each(|_| self.check_frame(depth + 1))
                }
                None => Ok(()),
            },
            other => Err(unknown_type(other)),
        }
    }

    /// Refuses an array whose elements would sit deeper than the depth limit.
    fn nest(&self, depth: usize) -> Result<(), FrameError> {
        let max = self.limits.depth_max;
        if depth + 1 > max {
            return Err(invalid(format!("arrays nested deeper than {max}")));
        }
        Ok(())
    }

    /// Builds one RESP frame nested `depth` arrays deep.
    fn parse_frame(&mut self, depth: usize) -> Result<Frame, FrameError> {
        match self.byte()? {
            b'+' => Ok(Frame::Simple(text(self.line()?)?.to_owned())),
            b'-' => Ok(Frame::Error(text(self.line()?)?.to_owned())),
            b':' => Ok(Frame::Integer(parse_integer(self.line()?)?)),
            b'$' => match self.length(self.limits.bulk_bytes_max, "bulk")? {
                Some(len) => Ok(Frame::Bulk(Bytes::copy_from_slice(self.bulk_body(len)?))),
                None => Ok(Frame::Null),
            },
            b'*' => match self.length(self.limits.array_len_max, "array")? {
                Some(len) => {
                    self.nest(depth)?;
                    // Every element takes at least FRAME_BYTES_MIN bytes, so this never
                    // reserves more than the buffer could fill.
                    let fits = self.rest().len() / FRAME_BYTES_MIN;
                    let mut items = Vec::with_capacity(len.min(fits));
                    for _ in 0..len {
                        items.push(self.parse_frame(depth + 1)?);
                    }
                    Ok(Frame::Array(items))
                }
                None => Ok(Frame::Null),
            },
            other => Err(unknown_type(other)),
        }
    }
}

fn is_type_byte(byte: u8) -> bool {
    matches!(byte, b'+' | b'-' | b':' | b'$' | b'*')
}

fn unknown_type(byte: u8) -> FrameError {
    invalid(format!("unknown frame type byte 0x{byte:02x}"))
}

fn text(line: &[u8]) -> Result<&str, FrameError> {
    std::str::from_utf8(line).map_err(|_| invalid("simple string is not UTF-8"))
}

/// Parses a decimal i64 strictly, as Redis's `string2ll`: optional `-`, no `+`, no leading
/// zeros, no `-0`, no overflow.
fn parse_integer(line: &[u8]) -> Result<i64, FrameError> {
    let (negative, digits) = match line {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, line),
    };
    let well_formed = match digits {
        [b'0'] => !negative,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !well_formed {
        return Err(invalid("malformed integer"));
    }
    digits.iter().try_fold(0i64, |value, &digit| {
        let digit = i64::from(digit - b'0');
        let shifted = value.checked_mul(10);
        let next = if negative {
            shifted.and_then(|v| v.checked_sub(digit))
        } else {
            shifted.and_then(|v| v.checked_add(digit))
        };
        next.ok_or_else(|| invalid("integer out of range"))
    })
}

/// Bytes that separate inline arguments (C's `isspace`, plus NUL).
fn is_separator(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c | 0)
}

/// Splits an inline command line into arguments like Redis's `sdssplitargs`.
fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut args = Vec::new();
    let mut pos = 0;
    loop {
        while line.get(pos).is_some_and(|&b| is_separator(b)) {
            pos += 1;
        }
        if pos == line.len() {
            return Ok(args);
        }
        let (arg, next) = inline_arg(line, pos)?;
        args.push(arg);
        pos = next;
    }
}

/// One inline argument starting at `pos`; returns it and the position after it. Quotes
/// may open mid-argument (`a"b c"` is `ab c`); a closing quote must end the argument.
fn inline_arg(line: &[u8], mut pos: usize) -> Result<(Vec<u8>, usize), FrameError> {
    let mut arg = Vec::new();
    while let Some(&byte) = line.get(pos) {
        match byte {
            b if is_separator(b) => break,
            b'"' => pos = double_quoted(line, pos + 1, &mut arg)?,
            b'\'' => pos = single_quoted(line, pos + 1, &mut arg)?,
            b => {
                arg.push(b);
                pos += 1;
            }
        }
    }
    Ok((arg, pos))
}

/// The body of a `"..."` argument from just after the opening quote; returns the position
/// after the closing quote.
fn double_quoted(line: &[u8], mut pos: usize, arg: &mut Vec<u8>) -> Result<usize, FrameError> {
    loop {
        if let Some(byte) = hex_escape(line.get(pos..).unwrap_or_default()) {
            arg.push(byte);
            pos += 4;
            continue;
        }
        match line.get(pos..) {
            Some([b'\\', escaped, ..]) => {
                arg.push(match escaped {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => *other,
                });
                pos += 2;
            }
            Some([b'"', ..]) => return closing_quote(line, pos),
            Some([byte, ..]) => {
                arg.push(*byte);
                pos += 1;
            }
            _ => return Err(invalid("unbalanced quotes in inline command")),
        }
    }
}

/// The body of a `'...'` argument from just after the opening quote; only `\'` is an
/// escape. Returns the position after the closing quote.
fn single_quoted(line: &[u8], mut pos: usize, arg: &mut Vec<u8>) -> Result<usize, FrameError> {
    loop {
        match line.get(pos..) {
            Some([b'\\', b'\'', ..]) => {
                arg.push(b'\'');
                pos += 2;
            }
            Some([b'\'', ..]) => return closing_quote(line, pos),
            Some([byte, ..]) => {
                arg.push(*byte);
                pos += 1;
            }
            _ => return Err(invalid("unbalanced quotes in inline command")),
        }
    }
}

/// Checks that the closing quote at `pos` ends the argument; returns the position after it.
fn closing_quote(line: &[u8], pos: usize) -> Result<usize, FrameError> {
    match line.get(pos + 1) {
        Some(&next) if !is_separator(next) => {
            Err(invalid("closing quote must be followed by a space"))
        }
        _ => Ok(pos + 1),
    }
}

/// The byte a `\xHH` escape at the start of `rest` stands for, if there is one.
fn hex_escape(rest: &[u8]) -> Option<u8> {
    match rest {
        [b'\\', b'x', high, low, ..] => Some(hex(*high)? << 4 | hex(*low)?),
        _ => None,
    }
}

fn hex(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn write_text(dst: &mut BytesMut, tag: u8, text: &str) {
    dst.put_u8(tag);
    // A CR or LF would end the line early and corrupt the stream; Redis does the same.
    dst.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    dst.put_slice(b"\r\n");
}

fn write_header(dst: &mut BytesMut, tag: u8, len: usize) {
    dst.put_u8(tag);
    write_unsigned(dst, len as u64);
    dst.put_slice(b"\r\n");
}

fn write_decimal(dst: &mut BytesMut, n: i64) {
    if n < 0 {
        dst.put_u8(b'-');
    }
    write_unsigned(dst, n.unsigned_abs());
}

fn write_unsigned(dst: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    dst.put_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(bytes: &[u8]) -> Result<usize, FrameError> {
        let mut cursor = Cursor::new(bytes);
        Frame::check(&mut cursor)?;
        Ok(cursor.position() as usize)
    }

    fn parse(bytes: &[u8]) -> Result<Frame, FrameError> {
        let len = check(bytes)?;
        let mut cursor = Cursor::new(bytes);
        let frame = Frame::parse(&mut cursor)?;
        assert_eq!(cursor.position() as usize, len, "parse and check disagree");
        Ok(frame)
    }

    fn bulk(data: &'static [u8]) -> Frame {
        Frame::Bulk(Bytes::from_static(data))
    }

    fn is_invalid(result: Result<usize, FrameError>) -> bool {
        matches!(result, Err(FrameError::Invalid(_)))
    }

    #[test]
    fn each_frame_kind_encodes_as_redis_does() {
        let cases: Vec<(Frame, &[u8])> = vec![
            (Frame::Simple("OK".into()), b"+OK\r\n"),
            (Frame::Error("ERR no".into()), b"-ERR no\r\n"),
            (Frame::Integer(-42), b":-42\r\n"),
            (Frame::Integer(i64::MIN), b":-9223372036854775808\r\n"),
            (bulk(b"a\r\nb"), b"$4\r\na\r\nb\r\n"),
            (bulk(b""), b"$0\r\n\r\n"),
            (Frame::Null, b"$-1\r\n"),
            (Frame::Array(vec![]), b"*0\r\n"),
            (
                Frame::Array(vec![bulk(b"GET"), Frame::Array(vec![Frame::Integer(1)])]),
                b"*2\r\n$3\r\nGET\r\n*1\r\n:1\r\n",
            ),
        ];
        for (frame, wire) in cases {
            assert_eq!(&frame.to_bytes()[..], wire, "{frame:?}");
            assert_eq!(parse(wire), Ok(frame));
        }
    }

    #[test]
    fn replies_encode_in_the_connection_protocol() {
        let map = Frame::Map(vec![
            (bulk(b"proto"), Frame::Integer(3)),
            (bulk(b"none"), Frame::Null),
        ]);
        let encode = |frame: &Frame, protocol| {
            let mut dst = BytesMut::new();
            frame.write_as(protocol, &mut dst);
            dst
        };
        assert_eq!(
            &encode(&map, Protocol::Resp3)[..],
            b"%2\r\n$5\r\nproto\r\n:3\r\n$4\r\nnone\r\n_\r\n"
        );
        assert_eq!(
            &encode(&map, Protocol::Resp2)[..],
            b"*4\r\n$5\r\nproto\r\n:3\r\n$4\r\nnone\r\n$-1\r\n"
        );
        let nested = Frame::Array(vec![Frame::Null, Frame::Map(vec![])]);
        assert_eq!(&encode(&nested, Protocol::Resp3)[..], b"*2\r\n_\r\n%0\r\n");
        assert_eq!(
            &encode(&nested, Protocol::Resp2)[..],
            b"*2\r\n$-1\r\n*0\r\n"
        );
    }

    #[test]
    fn null_array_parses_as_null() {
        assert_eq!(parse(b"*-1\r\n"), Ok(Frame::Null));
    }

    #[test]
    fn simple_text_with_line_breaks_is_encoded_with_spaces() {
        let frame = Frame::Error("ERR bad\r\nthing".into());
        assert_eq!(&frame.to_bytes()[..], b"-ERR bad  thing\r\n");
    }

    #[test]
    fn check_stops_after_the_first_of_several_frames() {
        assert_eq!(check(b":1\r\n:2\r\n"), Ok(4));
        let mut cursor = Cursor::new(&b":1\r\n$1\r\nx\r\n"[..]);
        assert_eq!(Frame::parse(&mut cursor), Ok(Frame::Integer(1)));
        assert_eq!(Frame::parse(&mut cursor), Ok(bulk(b"x")));
        assert_eq!(Frame::parse(&mut cursor), Err(FrameError::Incomplete));
    }

    #[test]
    fn inline_commands_parse_as_arrays_of_bulk_strings() {
        assert_eq!(parse(b"PING\r\n"), Ok(Frame::Array(vec![bulk(b"PING")])));
        assert_eq!(
            parse(b"set  k\tv\n"),
            Ok(Frame::Array(vec![bulk(b"set"), bulk(b"k"), bulk(b"v")]))
        );
        assert_eq!(
            parse(b"SET k \"a b\\n\\x41\" 'it\\'s'\r\n"),
            Ok(Frame::Array(vec![
                bulk(b"SET"),
                bulk(b"k"),
                bulk(b"a b\nA"),
                bulk(b"it's"),
            ]))
        );
        assert!(is_invalid(check(b"a\"b c\"d\r\n")));
        assert_eq!(
            parse(b"a\"b c\"\r\n"),
            Ok(Frame::Array(vec![bulk(b"ab c")]))
        );
        assert_eq!(parse(b"\r\n"), Ok(Frame::Array(vec![])));
        assert_eq!(parse(b"  \t \n"), Ok(Frame::Array(vec![])));
    }

    #[test]
    fn inline_commands_wait_for_their_line_feed() {
        assert_eq!(check(b"PING"), Err(FrameError::Incomplete));
        assert_eq!(check(b"PING\r"), Err(FrameError::Incomplete));
    }

    #[test]
    fn inline_commands_with_unbalanced_quotes_are_invalid() {
        assert!(is_invalid(check(b"SET k \"abc\r\n")));
        assert!(is_invalid(check(b"SET k 'abc\r\n")));
        assert!(is_invalid(check(b"SET k \"a\"b\r\n")));
    }

    #[test]
    fn inline_commands_are_only_accepted_at_top_level() {
        assert!(is_invalid(check(b"*1\r\nPING\r\n")));
    }

    #[test]
    fn overlong_inline_command_is_invalid_before_its_end_arrives() {
        let line = vec![b'a'; LINE_BYTES_MAX + 2];
        assert!(is_invalid(check(&line)));
        let mut fits = vec![b'a'; LINE_BYTES_MAX];
        fits.extend_from_slice(b"\r\n");
        assert_eq!(check(&fits), Ok(fits.len()));
    }

    #[test]
    fn overlong_simple_line_is_invalid_before_its_end_arrives() {
        let mut line = vec![b'+'];
        line.extend_from_slice(&vec![b'a'; LINE_BYTES_MAX + 1]);
        assert!(is_invalid(check(&line)));
    }

    #[test]
    fn oversized_declared_lengths_are_invalid_before_data_arrives() {
        let bulk = format!("${}\r\n", BULK_BYTES_MAX + 1);
        assert!(is_invalid(check(bulk.as_bytes())));
        let array = format!("*{}\r\n", ARRAY_LEN_MAX + 1);
        assert!(is_invalid(check(array.as_bytes())));
        assert!(is_invalid(check(b"$99999999999999999999\r\n")));
        assert!(is_invalid(check(b"*9223372036854775807\r\n")));
        // At the limit, the header alone is just incomplete.
        let at_limit = format!("${BULK_BYTES_MAX}\r\n");
        assert_eq!(check(at_limit.as_bytes()), Err(FrameError::Incomplete));
    }

    /// Small limits, so limit tests need not allocate hundreds of megabytes.
    const SMALL: Limits = Limits {
        bulk_bytes_max: 8,
        array_len_max: 4,
        depth_max: 2,
        line_bytes_max: 6,
        frame_bytes_max: 24,
    };

    fn check_small(bytes: &[u8]) -> Result<usize, FrameError> {
        let mut cursor = Cursor::new(bytes);
        Frame::check_within(&mut cursor, &SMALL)?;
        Ok(cursor.position() as usize)
    }

    #[test]
    fn frames_over_the_total_budget_are_invalid_before_data_arrives() {
        // Each bulk string is within its limit; the third would take the frame past 24.
        let fits = b"*2\r\n$8\r\n12345678\r\n$0\r\n\r\n";
        assert_eq!(check_small(fits), Ok(fits.len()));
        let mut over = b"*3\r\n$8\r\n12345678\r\n$0\r\n\r\n".to_vec();
        assert_eq!(check_small(&over), Err(FrameError::Incomplete));
        over.extend_from_slice(b"$1\r\n");
        assert!(is_invalid(check_small(&over)));
    }

    #[test]
    fn lowered_limits_are_enforced() {
        assert!(is_invalid(check_small(b"$9\r\n")));
        assert_eq!(check_small(b"$8\r\n"), Err(FrameError::Incomplete));
        assert!(is_invalid(check_small(b"*5\r\n")));
        assert!(is_invalid(check_small(b"*1\r\n*1\r\n*1\r\n")));
        assert!(is_invalid(check_small(b"+1234567")));
        assert_eq!(check_small(b"+123456\r\n"), Ok(9));
        assert!(is_invalid(check_small(b"PING PONG\r\n")));
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_invalid() {
        let at_limit = "*1\r\n".repeat(DEPTH_MAX) + ":1\r\n";
        assert!(check(at_limit.as_bytes()).is_ok());
        let too_deep = "*1\r\n".repeat(DEPTH_MAX + 1);
        assert!(is_invalid(check(too_deep.as_bytes())));
        let mut cursor = Cursor::new(too_deep.as_bytes());
        assert!(matches!(
            Frame::parse(&mut cursor),
            Err(FrameError::Invalid(_))
        ));
    }

    #[test]
    fn malformed_integers_and_lengths_are_invalid() {
        for wire in [
            &b":\r\n"[..],
            b":+1\r\n",
            b":01\r\n",
            b":-0\r\n",
            b":1x\r\n",
            b":9223372036854775808\r\n",
            b"$-2\r\n",
            b"*-2\r\n",
            b"$ 1\r\n",
        ] {
            assert!(is_invalid(check(wire)), "{:?}", wire.escape_ascii());
        }
        assert_eq!(
            parse(b":9223372036854775807\r\n"),
            Ok(Frame::Integer(i64::MAX))
        );
    }

    #[test]
    fn bad_line_endings_and_terminators_are_invalid() {
        assert!(is_invalid(check(b"+OK\n")));
        assert!(is_invalid(check(b"+O\rK\r\n")));
        assert!(is_invalid(check(b"$1\r\nab\r\n")));
        assert!(is_invalid(check(b"$1\r\nab")));
        assert!(is_invalid(check(b"+\xff\r\n")));
        assert!(is_invalid(check(b"*1\r\n!\r\n")));
    }

    #[test]
    fn parse_alone_refuses_what_check_refuses() {
        let mut cursor = Cursor::new(&b"*2\r\n:1\r\n"[..]);
        assert_eq!(Frame::parse(&mut cursor), Err(FrameError::Incomplete));
        let mut cursor = Cursor::new(&b"$3\r\nab"[..]);
        assert_eq!(Frame::parse(&mut cursor), Err(FrameError::Incomplete));
    }

    fn text_strategy() -> impl Strategy<Value = String> {
        "[^\r\n]{0,12}"
    }

    fn frame_strategy() -> impl Strategy<Value = Frame> {
        let leaf = prop_oneof![
            text_strategy().prop_map(Frame::Simple),
            text_strategy().prop_map(Frame::Error),
            any::<i64>().prop_map(Frame::Integer),
            prop::collection::vec(any::<u8>(), 0..16).prop_map(|v| Frame::Bulk(v.into())),
            Just(Frame::Null),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop::collection::vec(inner, 0..6).prop_map(Frame::Array)
        })
    }

    /// Runs check and parse on arbitrary bytes; they must agree and not panic.
    fn check_and_parse_agree(bytes: &[u8]) -> Result<(), TestCaseError> {
        let checked = check(bytes);
        let mut cursor = Cursor::new(bytes);
        let parsed = Frame::parse(&mut cursor);
        match checked {
            Ok(len) => {
                prop_assert!(parsed.is_ok(), "check Ok but parse {:?}", parsed);
                prop_assert_eq!(cursor.position() as usize, len);
            }
            Err(error) => prop_assert_eq!(parsed, Err(error)),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn encoded_frames_round_trip(frame in frame_strategy()) {
            let wire = frame.to_bytes();
            prop_assert_eq!(check(&wire), Ok(wire.len()));
            prop_assert_eq!(parse(&wire), Ok(frame));
        }

        #[test]
        fn every_proper_prefix_of_a_frame_is_incomplete(frame in frame_strategy()) {
            let wire = frame.to_bytes();
            for end in 0..wire.len() {
                prop_assert_eq!(check(&wire[..end]), Err(FrameError::Incomplete), "prefix {}", end);
            }
        }

        #[test]
        fn every_proper_prefix_of_an_inline_command_is_incomplete(
            args in prop::collection::vec("[a-zA-Z0-9]{1,8}", 0..5)
        ) {
            let wire = format!("{}\r\n", args.join(" "));
            for end in 0..wire.len() {
                prop_assert_eq!(check(&wire.as_bytes()[..end]), Err(FrameError::Incomplete));
            }
            let expected: Vec<Frame> =
                args.iter().map(|a| Frame::Bulk(Bytes::copy_from_slice(a.as_bytes()))).collect();
            prop_assert_eq!(parse(wire.as_bytes()), Ok(Frame::Array(expected)));
        }

        #[test]
        fn random_bytes_never_panic_and_check_agrees_with_parse(
            bytes in prop::collection::vec(any::<u8>(), 0..64)
        ) {
            check_and_parse_agree(&bytes)?;
        }

        #[test]
        fn random_bytes_after_a_type_byte_never_panic(
            tag in prop::sample::select(vec![b'+', b'-', b':', b'$', b'*']),
            bytes in prop::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'1'), Just(b'-'), Just(b'*'), any::<u8>()],
                0..64,
            ),
        ) {
            let mut wire = vec![tag];
            wire.extend_from_slice(&bytes);
            check_and_parse_agree(&wire)?;
        }

        #[test]
        fn mutated_frames_never_panic_and_check_agrees_with_parse(
            frame in frame_strategy(),
            position in any::<prop::sample::Index>(),
            replacement in any::<u8>(),
        ) {
            let mut wire = frame.to_bytes().to_vec();
            let at = position.index(wire.len());
            wire[at] = replacement;
            check_and_parse_agree(&wire)?;
        }
    }
}
