//! The double's own framing and field codec, written apart from the
//! agent's so an encoding mistake in one cannot hide in the other.

use std::{io, net::Ipv4Addr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one message: 16-byte header (length at bytes 8..12, BE), payload.
pub async fn read_msg<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut h = [0u8; 16];
    match r.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(h[8..12].try_into().expect("4 bytes")) as usize;
    let mut p = vec![0u8; len];
    r.read_exact(&mut p).await?;
    Ok(Some(p))
}

/// Writes one message. The first 8 header bytes are not zero, as VPP's
/// are not (it sends a queue pointer there): clients must ignore them.
pub async fn write_msg<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    let mut m = Vec::with_capacity(16 + payload.len());
    m.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1]);
    m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(payload);
    w.write_all(&m).await
}

/// A request being read; short input is an error (the message is dropped,
/// as VPP drops a malformed one).
pub struct Rd<'a> {
    b: &'a [u8],
    at: usize,
}

#[derive(Debug)]
pub struct Short;

impl<'a> Rd<'a> {
    pub fn new(b: &'a [u8], at: usize) -> Self {
        Self { b, at }
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let s = self.b.get(self.at..self.at + n).ok_or(Short)?;
        self.at += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.bytes(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, Short> {
        Ok(u16::from_be_bytes(
            self.bytes(2)?.try_into().map_err(|_| Short)?,
        ))
    }
    pub fn u32(&mut self) -> Result<u32, Short> {
        Ok(u32::from_be_bytes(
            self.bytes(4)?.try_into().map_err(|_| Short)?,
        ))
    }
    pub fn ip4(&mut self) -> Result<Ipv4Addr, Short> {
        let b = self.bytes(4)?;
        Ok(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
    /// `string x[n]`.
    pub fn cstr(&mut self, n: usize) -> Result<String, Short> {
        let b = self.bytes(n)?;
        let end = b.iter().position(|c| *c == 0).unwrap_or(n);
        Ok(String::from_utf8_lossy(&b[..end]).into_owned())
    }
    /// `string x[]`.
    pub fn vstr(&mut self) -> Result<String, Short> {
        let n = self.u32()? as usize;
        Ok(String::from_utf8_lossy(self.bytes(n)?).into_owned())
    }
}

/// A reply being built: `{u16 id; u32 context; ...}`.
pub struct Wr(pub Vec<u8>);

impl Wr {
    pub fn reply(id: u16, context: u32) -> Self {
        let mut v = id.to_be_bytes().to_vec();
        v.extend_from_slice(&context.to_be_bytes());
        Self(v)
    }
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn i32(self, v: i32) -> Self {
        self.u32(v as u32)
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    pub fn cstr(mut self, v: &str, n: usize) -> Self {
        let mut b = v.as_bytes().to_vec();
        b.truncate(n - 1);
        b.resize(n, 0);
        self.0.extend_from_slice(&b);
        self
    }
    pub fn vstr(self, v: &str) -> Self {
        self.u32(v.len() as u32).raw(v.as_bytes())
    }
}
