//! The socket transport's framing and the field encoding of VPP API
//! messages.
//!
//! Every message on `api.sock`, in both directions, is a 16-byte `msgbuf_t`
//! header (`u64 q`, `u32 data_len` big-endian, `u32 gc_mark`) followed by a
//! packed C struct whose integers are all big-endian. Messages are written
//! by hand against that layout (not generated) so each one can be checked
//! against the `.api` file it came from.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::error::VppError;

/// `msgbuf_t`: 8 bytes the client sends as zero, the payload length, 4 more.
pub const HEADER_LEN: usize = 16;

/// Largest payload accepted. `sockclnt_create_reply` carries the whole
/// message table (over 100 KB on a full VPP); anything near this bound is a
/// corrupt stream, not a message.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// A payload with its socket header in front.
pub fn frame(payload: &[u8]) -> Result<Vec<u8>, io::Error> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l as usize <= MAX_PAYLOAD)
        .ok_or_else(|| io::Error::other(format!("message of {} bytes", payload.len())))?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
    Ok(out)
}

/// Reads one framed message and returns its payload. `Ok(None)` is a clean
/// end of stream between messages.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; HEADER_LEN];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("VPP announced a {len}-byte message"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

/// The message id every payload starts with.
pub fn msg_id(payload: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]))
}

/// The context of a reply or details message (right after the id).
pub fn reply_context(payload: &[u8]) -> Option<u32> {
    let b = payload.get(2..6)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Builds a message body, field by field, in wire order.
#[derive(Debug)]
pub struct Writer {
    msg: &'static str,
    buf: Vec<u8>,
}

impl Writer {
    pub fn new(msg: &'static str) -> Self {
        Self {
            msg,
            buf: Vec::with_capacity(64),
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// Raw bytes: addresses and MACs are copied as they are.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// `string x[N]`: N bytes, NUL-padded. VPP reads it as a C string, so
    /// one byte must stay NUL and the text may not contain one.
    pub fn fixed_str(&mut self, field: &str, v: &str, n: usize) -> Result<&mut Self, VppError> {
        if v.len() >= n || v.contains('\0') {
            return Err(VppError::Encode {
                msg: self.msg,
                reason: format!(
                    "{field} {v:?} does not fit string[{n}] (at most {} bytes, no NUL)",
                    n - 1
                ),
            });
        }
        self.buf.extend_from_slice(v.as_bytes());
        self.buf.resize(self.buf.len() + n - v.len(), 0);
        Ok(self)
    }

    /// `string x[]`: a u32 length, then the bytes, no NUL.
    pub fn var_str(&mut self, field: &str, v: &str) -> Result<&mut Self, VppError> {
        let len = u32::try_from(v.len()).map_err(|_| VppError::Encode {
            msg: self.msg,
            reason: format!("{field} is {} bytes long", v.len()),
        })?;
        self.u32(len);
        Ok(self.bytes(v.as_bytes()))
    }
}

/// Reads a message body in wire order; every short read names the message
/// and the offset.
#[derive(Debug)]
pub struct Reader<'a> {
    msg: &'static str,
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Starts at `at` (6 for replies and details: after id and context).
    pub fn new(msg: &'static str, buf: &'a [u8], at: usize) -> Self {
        Self { msg, buf, at }
    }

    pub fn offset(&self) -> usize {
        self.at
    }

    pub fn error(&self, reason: impl Into<String>) -> VppError {
        VppError::Decode {
            msg: self.msg,
            reason: reason.into(),
        }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], VppError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else {
            return Err(self.error(format!(
                "{} bytes long, needs {n} more at offset {}",
                self.buf.len(),
                self.at
            )));
        };
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], VppError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, VppError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn bool(&mut self) -> Result<bool, VppError> {
        Ok(self.u8()? != 0)
    }

    pub fn u16(&mut self) -> Result<u16, VppError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, VppError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32, VppError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, VppError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// `string x[N]`: up to the first NUL. VPP's strings are ASCII; anything
    /// else is shown lossily rather than refused, since it is only shown.
    pub fn fixed_str(&mut self, n: usize) -> Result<String, VppError> {
        let raw = self.take(n)?;
        let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
        Ok(String::from_utf8_lossy(&raw[..end]).into_owned())
    }

    /// `string x[]`: u32 length and bytes. A trailing NUL (VPP's `cli_inband`
    /// reply is built with `format` and may keep one) is dropped.
    pub fn var_str(&mut self) -> Result<String, VppError> {
        let len = self.u32()? as usize;
        let raw = self.take(len)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        Ok(String::from_utf8_lossy(raw).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_header_is_sixteen_bytes_with_big_endian_length() {
        let f = frame(&[0xaa, 0xbb, 0xcc]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            f,
            [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0xaa, 0xbb, 0xcc
            ]
        );
    }

    #[tokio::test]
    async fn frames_are_split_from_one_stream() {
        let mut stream = Vec::new();
        // VPP's first 8 header bytes are garbage: they must be ignored.
        stream.extend_from_slice(&[9, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0, 2, 7, 7, 7, 7, 1, 2]);
        stream.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 3]);
        let mut r = stream.as_slice();
        let a = read_frame(&mut r).await.unwrap_or_else(|e| panic!("{e}"));
        let b = read_frame(&mut r).await.unwrap_or_else(|e| panic!("{e}"));
        let end = read_frame(&mut r).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a, b, end), (Some(vec![1, 2]), Some(vec![3]), None));
    }

    #[tokio::test]
    async fn a_truncated_payload_is_an_error() {
        let stream = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 1];
        let mut r = stream.as_slice();
        assert!(read_frame(&mut r).await.is_err());
    }

    #[test]
    fn fixed_strings_are_nul_padded_and_bounded() {
        let mut w = Writer::new("t");
        w.fixed_str("name", "ab", 4)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.into_bytes(), b"ab\0\0");
        let mut w = Writer::new("t");
        let e = w.fixed_str("name", "abcd", 4).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("cannot encode t: name \"abcd\" does not fit string[4] (at most 3 bytes, no NUL)")
        );
    }

    #[test]
    fn reader_names_message_and_offset_on_short_input() {
        let mut r = Reader::new("x_reply", &[0, 1, 0, 0, 0, 5, 0], 6);
        assert_eq!(r.u8().ok(), Some(0));
        let e = r.u32().err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("cannot decode x_reply: 7 bytes long, needs 4 more at offset 7")
        );
    }
}
