//! The encoding of [`Command`]s inside Raft log entries: varint integers, and a decode
//! bounded by its input, so a corrupt entry is a typed error rather than a huge allocation
//! or a panic.

use crate::codec::Codec;

use super::error::DecodeError;
use super::request::Command;

/// A command is bounded by the request size limit before it is proposed.
const COMMANDS: Codec = Codec::varint(u64::MAX);

impl Command {
    /// The bytes of a Raft entry carrying this command.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail; a failure is a bug in the types.
        match COMMANDS.encode(self) {
            Ok(bytes) => bytes,
            Err(e) => panic!("encoding an mvcc command failed: {e}"),
        }
    }

    /// Decodes a Raft entry's payload.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        COMMANDS.decode(bytes).map_err(|e| DecodeError {
            reason: e.to_string(),
        })
    }
}

/// The encoded size of `command`, without encoding it.
pub(crate) fn encoded_len(command: &Command) -> u64 {
    COMMANDS.size_bytes(command).unwrap_or(u64::MAX)
}
