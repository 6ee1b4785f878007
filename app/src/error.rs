//! The error every server function returns: one [`ErrorCode`], shown through its one sentence.
//! On the wire it is `{"code": "…"}`, plus `"retry_after"` (seconds) when waiting helps.

use engine::ErrorCode;
use leptos::prelude::{FromServerFnError, ServerFnErrorErr};
use leptos::server_fn::codec::JsonEncoding;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}")]
pub struct AppError {
    pub code: ErrorCode,
    /// Seconds until trying again can succeed (sent as `Retry-After` too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u32>,
    /// The form field the error is about, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A third party's own words (e.g. Librus' message), shown under our sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AppError {
    /// The sentence users read.
    pub fn message(&self) -> String {
        match self.retry_after {
            Some(seconds) => self.code.message_with_wait(seconds),
            None => self.code.message().to_owned(),
        }
    }
}

impl From<ErrorCode> for AppError {
    fn from(code: ErrorCode) -> Self {
        AppError {
            code,
            retry_after: None,
            field: None,
            detail: None,
        }
    }
}

#[cfg(feature = "ssr")]
impl From<engine::SignInRefusal> for AppError {
    fn from(refusal: engine::SignInRefusal) -> Self {
        match refusal {
            engine::SignInRefusal::Code(code) => code.into(),
            engine::SignInRefusal::Throttled { retry_after } => AppError {
                retry_after: Some(retry_after.clamp(1, u32::MAX as i64) as u32),
                ..ErrorCode::SignInThrottled.into()
            },
        }
    }
}

#[cfg(feature = "ssr")]
impl From<engine::sign_in::registration::SignUpRefusal> for AppError {
    fn from(refusal: engine::sign_in::registration::SignUpRefusal) -> Self {
        match refusal {
            engine::sign_in::registration::SignUpRefusal::Code(code) => code.into(),
            engine::sign_in::registration::SignUpRefusal::Throttled { retry_after } => AppError {
                retry_after: Some(retry_after.clamp(1, u32::MAX as i64) as u32),
                ..ErrorCode::RegistrationThrottled.into()
            },
        }
    }
}

#[cfg(feature = "ssr")]
impl From<engine::providers::StepError> for AppError {
    fn from(error: engine::providers::StepError) -> Self {
        AppError {
            field: error.field,
            detail: error.detail,
            ..error.code.into()
        }
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
            // The request could not be read as the call it claims to be: the sender's fault.
            ServerFnErrorErr::Args(_)
            | ServerFnErrorErr::MissingArg(_)
            | ServerFnErrorErr::Deserialization(_)
            | ServerFnErrorErr::UnsupportedRequestMethod(_) => ErrorCode::InvalidRequest,
            _ => ErrorCode::Unknown,
        };
        code.into()
    }
}
