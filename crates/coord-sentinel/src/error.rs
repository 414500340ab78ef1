//! [`SourceError`]: why a poll of a sentinel's event source failed. Its own
//! module so that the ledger and the sources both use it without using
//! each other.

/// Why a poll failed. A failed poll changes nothing: the next one returns
/// what this one would have.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The file system refused a read (other than a file vanishing, which is
    /// a change, not an error).
    #[error("{context}: {source}")]
    Io {
        /// What was being read.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The daemon could not be reached or refused.
    #[error("daemon: {0}")]
    Daemon(#[from] coord_client::ClientError),
    /// The daemon ended the stream with an error (e.g. `compacted`).
    #[error("daemon stream: {code}: {message}")]
    Stream {
        /// The protocol error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The state file could not be read or written.
    #[error("state file {path}: {reason}")]
    State {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A background task died.
    #[error("worker: {0}")]
    Worker(String),
}
