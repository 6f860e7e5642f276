//! Shared vocabulary of every Rakam crate: stable error codes and time helpers.
//!
//! Every library error implements [`ErrorExt`], so the HTTP layer can map any
//! error to a status in one place without knowing the crate it came from.

mod error_code;
pub mod time;

pub use error_code::{ErrorCode, ErrorExt};
