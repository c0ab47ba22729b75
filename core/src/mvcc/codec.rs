//! The encoding of [`Command`]s inside Raft log entries: bincode 1 with varint integers
//! and a size limit on decoding, so a corrupt entry is a typed error rather than a huge
//! allocation or a panic.

use bincode::Options;

use super::error::DecodeError;
use super::request::Command;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
}

impl Command {
    /// The bytes of a Raft entry carrying this command.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail; a failure is a bug in the types.
        match options().serialize(self) {
            Ok(bytes) => bytes,
            Err(e) => panic!("encoding an mvcc command failed: {e}"),
        }
    }

    /// Decodes a Raft entry's payload.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        options()
            .with_limit(bytes.len() as u64)
            .deserialize(bytes)
            .map_err(|e| DecodeError {
                reason: e.to_string(),
            })
    }
}

/// The encoded size of `command`, without encoding it.
pub(crate) fn encoded_len(command: &Command) -> u64 {
    options().serialized_size(command).unwrap_or(u64::MAX)
}
