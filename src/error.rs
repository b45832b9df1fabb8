//! The library's error type. Every fallible public function returns [`Result`].
//!
//! Variants carry the file (or the argument) that is wrong and say what is wrong with it, so a
//! user reading the message knows what to fix without a backtrace.

use std::path::PathBuf;

/// Errors returned by the cromo library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error on a named file or folder.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file or folder that is missing (with what it was expected to hold).
    #[error("{}: not found ({what})", path.display())]
    NotFound { path: PathBuf, what: String },
    /// A data file that is truncated, corrupt or not in the expected format.
    #[error("{}: {msg}", path.display())]
    BadData { path: PathBuf, msg: String },
    /// An image that cannot be decoded (file path or archive member).
    #[error("{}: cannot decode image: {msg}", path.display())]
    Image { path: PathBuf, msg: String },
    /// A weights file that does not fit the architecture (missing, unexpected, mis-shaped tensors).
    #[error("{}: {msg}", path.display())]
    Weights { path: PathBuf, msg: String },
    /// A caller-supplied argument or configuration value that is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A GPU (wgpu) failure: no adapter, a shader or pipeline rejected, a device error.
    #[error("gpu: {0}")]
    Gpu(String),
    /// An error raised by candle while computing.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `std::result::Result` with cromo's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::BadData`] for `path`.
    pub fn bad_data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::BadData {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// An [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}

/// Lets candle-facing code (`Module::forward`, custom ops) use `?` on cromo results: a wrapped
/// candle error comes back unchanged, any other error is wrapped.
impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(c) => c,
            other => candle_core::Error::wrap(other),
        }
    }
}
