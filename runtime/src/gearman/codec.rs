//! Framing of a Gearman connection: binary packets and text admin lines share one port,
//! told apart by the first byte (binary packets start with NUL).
//!
//! Errors here are the ones a connection cannot go on from (the byte stream has lost its
//! frame): the server sends an `ERROR` packet if it can and closes. Errors inside a
//! well-framed packet are [`super::ProtocolError`]s, answered and survived.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::packet::{Magic, RawPacket};

/// Longest admin command line accepted.
pub const MAX_ADMIN_LINE: usize = 8 * 1024;

/// Most the decoder sets aside for a packet body still arriving, beyond what arrived.
pub const READ_AHEAD: usize = 64 * 1024;

/// One unit read from a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A binary packet.
    Packet(RawPacket),
    /// An admin protocol line, without its line end.
    Admin(String),
}

/// Why a connection's byte stream cannot be read on.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A packet starting with NUL whose magic is neither `\0REQ` nor `\0RES`.
    #[error("bad magic {0:?}: not a Gearman packet")]
    BadMagic([u8; 4]),
    /// A body larger than the node accepts.
    #[error("packet of {size} bytes is over the limit of {max} bytes: send less data per job, or raise max_message_bytes on the node")]
    TooLarge {
        /// The size announced.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// An admin line longer than [`MAX_ADMIN_LINE`].
    #[error("admin command line over {MAX_ADMIN_LINE} bytes")]
    LineTooLong,
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl CodecError {
    /// A short label for the metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            CodecError::BadMagic(_) => "bad_magic",
            CodecError::TooLarge { .. } => "too_large",
            CodecError::LineTooLong => "line_too_long",
            CodecError::Io(_) => "io",
        }
    }
}

/// The codec: decodes [`Frame`]s, encodes ready-made packets ([`Bytes`]).
#[derive(Debug, Clone)]
pub struct GearmanCodec {
    max_body: u64,
}

impl GearmanCodec {
    /// A codec refusing packet bodies over `max_body` bytes.
    pub fn new(max_body: u64) -> Self {
        Self { max_body }
    }
}

impl Decoder for GearmanCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let Some(&first) = src.first() else {
            return Ok(None);
        };
        if first != 0 {
            let Some(end) = src.iter().position(|&b| b == b'\n') else {
                if src.len() > MAX_ADMIN_LINE {
                    return Err(CodecError::LineTooLong);
                }
                return Ok(None);
            };
            if end > MAX_ADMIN_LINE {
                return Err(CodecError::LineTooLong);
            }
            let line = src.split_to(end + 1);
            let text = String::from_utf8_lossy(&line[..end]);
            return Ok(Some(Frame::Admin(text.trim_end_matches('\r').to_string())));
        }
        if src.len() < 12 {
            // Check the magic as soon as it is there, so garbage is refused at once.
            if src.len() >= 4 && &src[..4] != Magic::Req.bytes() && &src[..4] != Magic::Res.bytes()
            {
                return Err(CodecError::BadMagic([src[0], src[1], src[2], src[3]]));
            }
            return Ok(None);
        }
        let magic = match &src[..4] {
            m if m == Magic::Req.bytes() => Magic::Req,
            m if m == Magic::Res.bytes() => Magic::Res,
            m => return Err(CodecError::BadMagic([m[0], m[1], m[2], m[3]])),
        };
        let code = u32::from_be_bytes([src[4], src[5], src[6], src[7]]);
        let size = u32::from_be_bytes([src[8], src[9], src[10], src[11]]) as u64;
        if size > self.max_body {
            return Err(CodecError::TooLarge {
                size,
                max: self.max_body,
            });
        }
        let total = 12 + size as usize;
        if src.len() < total {
            // Room for what the next read may bring, not for the size the header
            // claims: a header alone must not make the node set aside megabytes.
            src.reserve((total - src.len()).min(READ_AHEAD));
            return Ok(None);
        }
        src.advance(12);
        let body = src.split_to(size as usize).freeze();
        Ok(Some(Frame::Packet(RawPacket { magic, code, body })))
    }
}

impl Encoder<Bytes> for GearmanCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::packet::{request, PacketType};
    use super::*;

    fn decode_all(bytes: &[u8]) -> (Vec<Frame>, Option<CodecError>) {
        let mut c = GearmanCodec::new(1024);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match c.decode(&mut buf) {
                Ok(Some(f)) => out.push(f),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn packets_and_admin_lines_share_a_stream() {
        let mut b = request(PacketType::ECHO_REQ, &[b"hi"]).to_vec();
        b.extend_from_slice(b"status\r\n");
        b.extend_from_slice(&request(PacketType::GRAB_JOB, &[]));
        let (f, e) = decode_all(&b);
        assert!(e.is_none());
        assert_eq!(f.len(), 3);
        assert_eq!(f[1], Frame::Admin("status".into()));
        match &f[2] {
            Frame::Packet(p) => assert_eq!(p.code, PacketType::GRAB_JOB.code()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_truncated_packet_waits_for_the_rest() {
        let b = request(PacketType::ECHO_REQ, &[b"hello"]);
        let (f, e) = decode_all(&b[..14]);
        assert!(f.is_empty() && e.is_none());
    }

    #[test]
    fn a_header_alone_sets_aside_no_more_than_a_read_ahead() {
        let max = 16 * 1024 * 1024;
        let mut c = GearmanCodec::new(max);
        let mut b = request(PacketType::ECHO_REQ, &[]).to_vec();
        b[8..12].copy_from_slice(&(max as u32).to_be_bytes());
        b.push(b'x');
        let mut buf = BytesMut::from(&b[..]);
        assert!(matches!(c.decode(&mut buf), Ok(None)));
        assert!(
            buf.capacity() <= b.len() + READ_AHEAD,
            "reserved {} bytes for a 13-byte arrival",
            buf.capacity()
        );
        // The body still decodes once it has all arrived, read by read.
        let body = vec![b'y'; max as usize - 1];
        for chunk in body.chunks(READ_AHEAD) {
            buf.extend_from_slice(chunk);
        }
        match c.decode(&mut buf) {
            Ok(Some(Frame::Packet(p))) => assert_eq!(p.body.len(), max as usize),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_magic_and_oversized_bodies_are_errors() {
        let (_, e) = decode_all(b"\0XYZ\0\0\0\x01");
        assert!(matches!(e, Some(CodecError::BadMagic(_))));
        let mut b = request(PacketType::ECHO_REQ, &[]).to_vec();
        b[8..12].copy_from_slice(&4096u32.to_be_bytes());
        let (_, e) = decode_all(&b);
        assert!(matches!(
            e,
            Some(CodecError::TooLarge {
                size: 4096,
                max: 1024
            })
        ));
        let (_, e) = decode_all(&[b'a'; MAX_ADMIN_LINE + 2]);
        assert!(matches!(e, Some(CodecError::LineTooLong)));
    }
}
