//! The error every server function returns: one [`ErrorCode`], shown through its one sentence.

use engine::ErrorCode;
use leptos::prelude::{FromServerFnError, ServerFnErrorErr};
use leptos::server_fn::codec::JsonEncoding;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}")]
pub struct AppError {
    pub code: ErrorCode,
}

impl AppError {
    pub fn message(&self) -> &'static str {
        self.code.message()
    }
}

impl From<ErrorCode> for AppError {
    fn from(code: ErrorCode) -> Self {
        AppError { code }
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(e: ServerFnErrorErr) -> Self {
        let code = match e {
            // The request never got an answer: the network or the server is down.
            ServerFnErrorErr::Request(_) | ServerFnErrorErr::Response(_) => {
                ErrorCode::ServerUnreachable
            }
            _ => ErrorCode::Unknown,
        };
        AppError { code }
    }
}
