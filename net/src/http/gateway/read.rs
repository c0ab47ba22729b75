//! Reading the gateway's JSON requests: a unary call's body whole, a stream's messages as
//! they arrive (each byte scanned once), and the errors a body can give.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderMap;
use futures_util::stream::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::debug;

/// Reads the whole body and decodes the first JSON value in it; an empty body is the empty
/// message, and what follows the first value is ignored (both as grpc-gateway does).
pub(super) async fn read_message<T: DeserializeOwned + Default>(
    request: Request,
    max_body_bytes: usize,
) -> Result<(HeaderMap, T), Status> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, max_body_bytes)
        .await
        .map_err(|error| body_error(&error))?;
    let message = match serde_json::Deserializer::from_slice(&bytes)
        .into_iter::<T>()
        .next()
    {
        None => T::default(),
        Some(decoded) => decoded.map_err(|error| malformed(&error))?,
    };
    Ok((parts.headers, message))
}

pub(super) fn malformed(error: &serde_json::Error) -> Status {
    Status::invalid_argument(error.to_string())
}

pub(super) fn body_error(error: &axum::Error) -> Status {
    let over_limit = std::error::Error::source(error)
        .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
    if over_limit {
        too_large()
    } else {
        Status::cancelled(format!("reading the request body: {error}"))
    }
}

pub(super) fn too_large() -> Status {
    Status::resource_exhausted("request body too large")
}

/// Decodes a stream of JSON objects (whitespace-separated, as clients write them) from a
/// body as its bytes arrive. Each byte is scanned once to find where an object ends, and the
/// object parsed once, so a message trickling in byte by byte costs no more than one sent
/// whole.
pub(super) struct JsonReader {
    body: axum::body::BodyDataStream,
    buffer: Vec<u8>,
    body_ended: bool,
    object_end: ObjectEnd,
    max_message_bytes: usize,
}

impl JsonReader {
    pub(super) fn new(body: Body, max_message_bytes: usize) -> JsonReader {
        JsonReader {
            body: body.into_data_stream(),
            buffer: Vec::new(),
            body_ended: false,
            object_end: ObjectEnd::default(),
            max_message_bytes,
        }
    }

    /// The next value, `None` when the body ends between values.
    pub(super) async fn next<T: DeserializeOwned>(&mut self) -> Option<Result<T, Status>> {
        loop {
            match self.decode_buffered::<T>() {
                Decoded::Value(value) => return Some(Ok(value)),
                Decoded::Malformed(status) => return Some(Err(status)),
                Decoded::Empty if self.body_ended => return None,
                Decoded::Empty | Decoded::Partial => {}
            }
            if self.buffer.len() > self.max_message_bytes {
                return Some(Err(too_large()));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                // A body that fails (the client went away) ends like one that ends.
                Some(Err(_)) | None => self.body_ended = true,
            }
        }
    }

    fn decode_buffered<T: DeserializeOwned>(&mut self) -> Decoded<T> {
        let start = self
            .buffer
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(self.buffer.len());
        self.buffer.drain(..start);
        match self.buffer.first() {
            None => return Decoded::Empty,
            // Not an object: serde says what is wrong with it (or wants the rest of `nul`).
            Some(&first) if first != b'{' => return self.decode_prefix(),
            Some(_) => {}
        }
        let Some(len) = self.object_end.find(&self.buffer) else {
            return if self.body_ended {
                self.decode_prefix()
            } else {
                Decoded::Partial
            };
        };
        let decoded = serde_json::from_slice(&self.buffer[..len]);
        self.buffer.drain(..len);
        match decoded {
            Ok(_) if len > self.max_message_bytes => Decoded::Malformed(too_large()),
            Ok(value) => Decoded::Value(value),
            Err(error) => Decoded::Malformed(malformed(&error)),
        }
    }

    /// Lets serde decode the buffer's first value as far as it goes.
    fn decode_prefix<T: DeserializeOwned>(&mut self) -> Decoded<T> {
        let mut values = serde_json::Deserializer::from_slice(&self.buffer).into_iter::<T>();
        match values.next() {
            Some(Ok(value)) => {
                let used = values.byte_offset();
                self.buffer.drain(..used);
                Decoded::Value(value)
            }
            Some(Err(error)) if error.is_eof() && !self.body_ended => Decoded::Partial,
            Some(Err(error)) => Decoded::Malformed(malformed(&error)),
            None => Decoded::Empty,
        }
    }
}

enum Decoded<T> {
    Value(T),
    Malformed(Status),
    /// The buffer holds the beginning of a value.
    Partial,
    /// Nothing but whitespace.
    Empty,
}

/// Finds where the JSON object at the start of a buffer ends, remembering how far it has
/// scanned so that bytes arriving later are looked at once.
#[derive(Debug, Default)]
pub(super) struct ObjectEnd {
    scanned_bytes: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl ObjectEnd {
    /// The length of the complete object at the start of `buffer`, if it has all arrived.
    pub(super) fn find(&mut self, buffer: &[u8]) -> Option<usize> {
        for (at, &byte) in buffer.iter().enumerate().skip(self.scanned_bytes) {
            if self.in_string {
                match byte {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        *self = ObjectEnd::default();
                        return Some(at + 1);
                    }
                }
                _ => {}
            }
        }
        self.scanned_bytes = buffer.len();
        None
    }
}

/// A client's request messages on a bidirectional stream, decoded from the HTTP body by a
/// task of their own as they arrive.
#[derive(Debug)]
pub struct Messages<T>(mpsc::Receiver<T>);

impl<T: DeserializeOwned + Send + 'static> Messages<T> {
    /// `first`, then what `reader` decodes. A malformed message ends the client's side of
    /// the stream, as grpc-gateway does once a stream runs.
    pub(super) fn spawn(first: Option<T>, mut reader: JsonReader) -> Messages<T> {
        // One message in hand at a time: the body is read as fast as the service takes it.
        let (sender, receiver) = mpsc::channel(1);
        tokio::spawn(async move {
            if let Some(first) = first {
                if sender.send(first).await.is_err() {
                    return;
                }
            }
            while let Some(decoded) = reader.next::<T>().await {
                let message = match decoded {
                    Ok(message) => message,
                    Err(status) => {
                        debug!(error = %status.message(), "gateway stream: bad message; closing the send side");
                        return;
                    }
                };
                if sender.send(message).await.is_err() {
                    return;
                }
            }
        });
        Messages(receiver)
    }
}

impl<T> futures_util::Stream for Messages<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_ends_at_its_closing_brace_not_at_braces_in_strings() {
        let text = br#"{"a": "}\"{", "b": [{}, {"c": "\\"}]} {"next": 1}"#;
        let mut end = ObjectEnd::default();
        // Fed in two parts: the scan resumes where it stopped.
        assert_eq!(end.find(&text[..10]), None);
        let len = end.find(text).unwrap();
        assert_eq!(&text[..len], br#"{"a": "}\"{", "b": [{}, {"c": "\\"}]}"#);
        assert_eq!(end.find(&text[len + 1..]), Some(11));
    }
}
