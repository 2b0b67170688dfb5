//! The SDK's error type.

use kafka_protocol::ResponseError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the broker at {addr}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection to the broker failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the broker does not serve {api} at any version this client speaks")]
    Unsupported { api: &'static str },
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A Kafka error code, with the broker's message when it sent one.
    #[error("{what}: {} ({}){}", error_name(*code), code, message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        what: String,
        code: i16,
        message: Option<String>,
    },
    #[error("timed out waiting for the broker")]
    Timeout,
    /// The request does not fit what the broker reports (an unknown state,
    /// no open transaction): the message says what to change.
    #[error("{0}")]
    Invalid(String),
}

/// Kafka's name for an error code, e.g. `TOPIC_ALREADY_EXISTS`.
pub fn error_name(code: i16) -> String {
    let debug = format!(
        "{:?}",
        ResponseError::try_from_code(code).unwrap_or(ResponseError::Unknown(code))
    );
    // CamelCase → SCREAMING_SNAKE_CASE, Kafka's spelling.
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

impl Error {
    /// Builds an error from a non-zero Kafka error code.
    pub fn kafka(what: impl Into<String>, code: i16, message: Option<String>) -> Error {
        Error::Kafka {
            what: what.into(),
            code,
            message,
        }
    }

    pub fn code(&self) -> Option<i16> {
        match self {
            Error::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }
}
