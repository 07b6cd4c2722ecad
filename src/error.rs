//! The crate's error type. Every variant carries a message that names what was wrong and
//! where (file, line, item, tensor), so the binary can print it as it is and exit with 2.

/// An error of stereoscope, with a message meant for the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad user input: flags, BBQ files, folders.
    #[error("{0}")]
    Input(String),
    /// A model that cannot be found, read or run.
    #[error("{0}")]
    Model(String),
    /// The results folder cannot be read or written.
    #[error("{0}")]
    Store(String),
    /// The run was cancelled; what finished is on disk.
    #[error("cancelled")]
    Cancelled,
    /// A tensor operation failed.
    #[error("model computation failed: {}", brief(.0))]
    Candle(candle_core::Error),
    /// The device has no memory left for the batch in flight.
    #[error(
        "the device ran out of memory ({0}); run again with a smaller --batch-size: finished parts are kept and the run resumes"
    )]
    OutOfMemory(String),
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Error {
        let msg = brief(&e);
        if msg.contains("OUT_OF_MEMORY") || msg.to_lowercase().contains("out of memory") {
            Error::OutOfMemory(msg)
        } else {
            Error::Candle(e)
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A candle error's message without the backtrace candle attaches when `RUST_BACKTRACE` is set.
pub fn brief(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => brief(inner),
        other => other.to_string(),
    }
}
