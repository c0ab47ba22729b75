//! Accepting the `:authority` etcd's own clients send. etcd 3.4's clientv3 (and so `etcdctl`
//! 3.4, and every `--cluster` form of it) dials an endpoint URL as it was given, and grpc-go
//! puts that string in HTTP/2's `:authority`: `http://127.0.0.1:2379`. That is not an
//! authority, and the HTTP/2 server under tonic (h2) answers such a request with
//! `RST_STREAM PROTOCOL_ERROR`; etcd's grpc-go server never looks at it.
//!
//! [`AuthorityFix`] sits between a client connection and the HTTP/2 server and reads the
//! first request's headers (HPACK-decoded with the client's table). If its authority is
//! well-formed, or absent, the connection passes through untouched from then on: no cost
//! for everyone else. If not, every header block of the connection is decoded, given the
//! authority the URL names (`127.0.0.1:2379`; dropped if even that is not one), and
//! re-encoded for the server with a table of its own. Other frames, and HTTP/1.1 on the same
//! port, pass through as they are.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_BYTES: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// HTTP/2's default SETTINGS_MAX_FRAME_SIZE, which the server accepts whatever it sets.
const MAX_OUT_FRAME_BYTES: usize = 16_384;
/// A header block larger than this is left to the server to refuse.
const MAX_HEADER_BLOCK_BYTES: usize = 1 << 20;
const READ_CHUNK_BYTES: usize = 16 * 1024;

#[derive(Debug)]
enum Mode {
    /// Waiting for enough bytes to tell HTTP/2's preface from anything else.
    Preface,
    /// Reading frames up to the first request's header block.
    FirstHeaders,
    /// Every header block is rewritten.
    Rewrite,
    /// Bytes go through as they are.
    PassThrough,
}

/// A header block being gathered: its HEADERS frame and CONTINUATIONs.
#[derive(Debug)]
struct PendingBlock {
    stream_id: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: BytesMut,
    /// The frames as received, for passing through unchanged.
    raw: BytesMut,
}

/// A client connection whose HTTP/2 header blocks get a usable `:authority` (module docs).
pub struct AuthorityFix<T> {
    inner: T,
    mode: Mode,
    /// Bytes read from the client and not yet looked at.
    raw: BytesMut,
    /// Bytes ready for the server.
    out: BytesMut,
    block: Option<PendingBlock>,
    client_table: loona_hpack::Decoder<'static>,
    server_table: loona_hpack::Encoder<'static>,
    /// Connections whose authority was rewritten (for a one-time log line).
    rewritten: bool,
}

impl<T> std::fmt::Debug for AuthorityFix<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityFix")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<T> AuthorityFix<T> {
    pub fn new(inner: T) -> AuthorityFix<T> {
        AuthorityFix {
            inner,
            mode: Mode::Preface,
            raw: BytesMut::new(),
            out: BytesMut::new(),
            block: None,
            client_table: loona_hpack::Decoder::new(),
            server_table: loona_hpack::Encoder::new(),
            rewritten: false,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Moves what can be decided from `raw` to `out`.
    fn process(&mut self) {
        loop {
            match self.mode {
                Mode::PassThrough => {
                    let raw = self.raw.split();
                    self.out.extend_from_slice(&raw);
                    return;
                }
                Mode::Preface => {
                    let seen = self.raw.len().min(PREFACE.len());
                    if self.raw[..seen] != PREFACE[..seen] {
                        self.mode = Mode::PassThrough;
                        continue;
                    }
                    if seen < PREFACE.len() {
                        return;
                    }
                    let preface = self.raw.split_to(PREFACE.len());
                    self.out.extend_from_slice(&preface);
                    self.mode = Mode::FirstHeaders;
                }
                Mode::FirstHeaders | Mode::Rewrite => {
                    if !self.next_frame() {
                        return;
                    }
                }
            }
        }
    }

    /// Handles one whole frame from `raw`, if there is one.
    fn next_frame(&mut self) -> bool {
        if self.raw.len() < FRAME_HEADER_BYTES {
            return false;
        }
        let length = usize::from(self.raw[0]) << 16
            | usize::from(self.raw[1]) << 8
            | usize::from(self.raw[2]);
        let (kind, flags) = (self.raw[3], self.raw[4]);
        let stream_id =
            u32::from_be_bytes([self.raw[5], self.raw[6], self.raw[7], self.raw[8]]) & 0x7fff_ffff;
        if self.raw.len() < FRAME_HEADER_BYTES + length {
            return false;
        }
        let frame = self.raw.split_to(FRAME_HEADER_BYTES + length);
        let expecting_continuation = self.block.is_some();
        match kind {
            FRAME_HEADERS if !expecting_continuation => self.start_block(stream_id, flags, frame),
            FRAME_CONTINUATION if expecting_continuation => self.continue_block(flags, frame),
            _ if expecting_continuation => self.give_up(frame),
            _ => self.out.extend_from_slice(&frame),
        }
        true
    }

    fn start_block(&mut self, stream_id: u32, flags: u8, frame: BytesMut) {
        let mut payload = &frame[FRAME_HEADER_BYTES..];
        let mut pad_bytes = 0;
        if flags & FLAG_PADDED != 0 {
            let Some((&pad, rest)) = payload.split_first() else {
                return self.give_up(frame);
            };
            pad_bytes = usize::from(pad);
            payload = rest;
        }
        let mut priority = None;
        if flags & FLAG_PRIORITY != 0 {
            if payload.len() < 5 {
                return self.give_up(frame);
            }
            let mut bytes = [0u8; 5];
            bytes.copy_from_slice(&payload[..5]);
            priority = Some(bytes);
            payload = &payload[5..];
        }
        if pad_bytes > payload.len() {
            return self.give_up(frame);
        }
        let fragment = BytesMut::from(&payload[..payload.len() - pad_bytes]);
        self.block = Some(PendingBlock {
            stream_id,
            flags,
            priority,
            fragment,
            raw: frame,
        });
        if flags & FLAG_END_HEADERS != 0 {
            self.finish_block();
        }
    }

    fn continue_block(&mut self, flags: u8, frame: BytesMut) {
        let Some(block) = self.block.as_mut() else {
            return self.give_up(frame);
        };
        block
            .fragment
            .extend_from_slice(&frame[FRAME_HEADER_BYTES..]);
        block.raw.extend_from_slice(&frame);
        if block.fragment.len() > MAX_HEADER_BLOCK_BYTES {
            return self.give_up(BytesMut::new());
        }
        if flags & FLAG_END_HEADERS != 0 {
            self.finish_block();
        }
    }

    /// A whole header block: decide (first block) or rewrite it.
    fn finish_block(&mut self) {
        let Some(block) = self.block.take() else {
            return;
        };
        let Ok(headers) = self.client_table.decode(&block.fragment) else {
            // Not HPACK we understand: let the server judge the bytes.
            return self.give_up(block.raw);
        };
        if matches!(self.mode, Mode::FirstHeaders) {
            if authority(&headers).is_none_or(is_valid_authority) {
                self.out.extend_from_slice(&block.raw);
                self.mode = Mode::PassThrough;
                return;
            }
            self.mode = Mode::Rewrite;
        }
        let fixed: Vec<(Vec<u8>, Vec<u8>)> = headers
            .into_iter()
            .filter_map(|(name, value)| {
                if name != b":authority" || is_valid_authority(&value) {
                    return Some((name, value));
                }
                if !self.rewritten {
                    self.rewritten = true;
                    tracing::debug!(
                        authority = %String::from_utf8_lossy(&value),
                        "a client sent a URL as :authority (etcd 3.4's clientv3 does); using \
                         the host and port it names"
                    );
                }
                authority_of_url(&value).map(|fixed| (name, fixed))
            })
            .collect();
        let encoded = self
            .server_table
            .encode(fixed.iter().map(|(n, v)| (&n[..], &v[..])));
        self.emit_block(&block, &encoded);
    }

    /// Writes a header block as HEADERS (+ CONTINUATION) frames, unpadded.
    fn emit_block(&mut self, block: &PendingBlock, encoded: &[u8]) {
        let priority_bytes = block.priority.map_or(0, |_| 5);
        let first_room = MAX_OUT_FRAME_BYTES - priority_bytes;
        let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
        let mut flags = block.flags & (FLAG_END_STREAM | FLAG_PRIORITY);
        if rest.is_empty() {
            flags |= FLAG_END_HEADERS;
        }
        put_frame_header(
            &mut self.out,
            first.len() + priority_bytes,
            FRAME_HEADERS,
            flags,
            block.stream_id,
        );
        if let Some(priority) = block.priority {
            self.out.put_slice(&priority);
        }
        self.out.put_slice(first);
        while !rest.is_empty() {
            let (piece, remaining) = rest.split_at(rest.len().min(MAX_OUT_FRAME_BYTES));
            rest = remaining;
            let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
            put_frame_header(
                &mut self.out,
                piece.len(),
                FRAME_CONTINUATION,
                flags,
                block.stream_id,
            );
            self.out.put_slice(piece);
        }
    }

    /// Something unexpected: pass everything through and let the server answer it.
    fn give_up(&mut self, pending: BytesMut) {
        if let Some(block) = self.block.take() {
            self.out.extend_from_slice(&block.raw);
        }
        self.out.extend_from_slice(&pending);
        self.mode = Mode::PassThrough;
    }
}

fn put_frame_header(out: &mut BytesMut, length: usize, kind: u8, flags: u8, stream_id: u32) {
    out.put_u8((length >> 16) as u8);
    out.put_u8((length >> 8) as u8);
    out.put_u8(length as u8);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream_id);
}

fn authority(headers: &[(Vec<u8>, Vec<u8>)]) -> Option<&[u8]> {
    headers
        .iter()
        .find(|(name, _)| name == b":authority")
        .map(|(_, value)| &value[..])
}

fn is_valid_authority(value: &[u8]) -> bool {
    axum::http::uri::Authority::try_from(value).is_ok()
}

/// `http://host:port[/]` → `host:port`, if that is an authority.
fn authority_of_url(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?;
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .or_else(|| text.strip_prefix("unix://"))?;
    let host_port = rest.split('/').next()?;
    is_valid_authority(host_port.as_bytes()).then(|| host_port.as_bytes().to_vec())
}

impl<T: AsyncRead + Unpin> AsyncRead for AuthorityFix<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if matches!(this.mode, Mode::PassThrough) && this.raw.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // The client closed: hand over whatever is left as it is.
                    let rest = this.raw.split();
                    this.out.extend_from_slice(&rest);
                    if let Some(block) = this.block.take() {
                        this.out.extend_from_slice(&block.raw);
                    }
                    if this.out.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Ok(())) => {
                    this.raw.extend_from_slice(read.filled());
                    this.process();
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<T>
{
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn headers_frame(stream_id: u32, block: &[u8], flags: u8) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_frame_header(&mut out, block.len(), FRAME_HEADERS, flags, stream_id);
        out.put_slice(block);
        out.to_vec()
    }

    fn request(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/etcdserverpb.KV/Range"),
            (":authority", authority),
            ("content-type", "application/grpc"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    /// What the server side reads from a connection on which the client wrote `bytes`.
    async fn through(bytes: Vec<u8>) -> Vec<u8> {
        let mut fixed = AuthorityFix::new(&bytes[..]);
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await.unwrap();
        out
    }

    /// Decodes the header blocks of HEADERS frames after the preface.
    fn server_headers(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut decoder = loona_hpack::Decoder::new();
        let mut rest = &bytes[PREFACE.len()..];
        let mut blocks = Vec::new();
        while rest.len() >= FRAME_HEADER_BYTES {
            let length =
                usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            let payload = &rest[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + length];
            if rest[3] == FRAME_HEADERS {
                blocks.push(decoder.decode(payload).unwrap());
            }
            rest = &rest[FRAME_HEADER_BYTES + length..];
        }
        blocks
    }

    #[tokio::test]
    async fn a_url_as_authority_becomes_its_host_and_port_on_every_request() {
        let mut client = loona_hpack::Encoder::new();
        let mut bytes = PREFACE.to_vec();
        for stream_id in [1, 3] {
            let block = client.encode(
                request("http://127.0.0.1:2379")
                    .iter()
                    .map(|(n, v)| (&n[..], &v[..])),
            );
            bytes.extend(headers_frame(stream_id, &block, FLAG_END_HEADERS));
        }
        let seen = server_headers(&through(bytes).await);
        assert_eq!(seen.len(), 2);
        for block in seen {
            assert_eq!(authority(&block), Some(&b"127.0.0.1:2379"[..]), "{block:?}");
        }
    }

    #[tokio::test]
    async fn a_well_formed_authority_passes_through_byte_for_byte() {
        let mut client = loona_hpack::Encoder::new();
        let mut bytes = PREFACE.to_vec();
        let block = client.encode(
            request("127.0.0.1:2379")
                .iter()
                .map(|(n, v)| (&n[..], &v[..])),
        );
        bytes.extend(headers_frame(1, &block, FLAG_END_HEADERS | FLAG_END_STREAM));
        bytes.extend_from_slice(&[0, 0, 5, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(through(bytes.clone()).await, bytes);
        let http1 = b"POST /v3/kv/range HTTP/1.1\r\nHost: http://x\r\n\r\n".to_vec();
        assert_eq!(through(http1.clone()).await, http1);
    }

    #[test]
    fn urls_become_authorities() {
        assert_eq!(
            authority_of_url(b"http://127.0.0.1:2379"),
            Some(b"127.0.0.1:2379".to_vec())
        );
        assert_eq!(
            authority_of_url(b"https://node-1:2379/"),
            Some(b"node-1:2379".to_vec())
        );
        assert_eq!(authority_of_url(b"not a url"), None);
        assert!(is_valid_authority(b"127.0.0.1:2379"));
        assert!(!is_valid_authority(b"http://127.0.0.1:2379"));
    }
}
