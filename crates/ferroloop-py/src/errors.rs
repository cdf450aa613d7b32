//! The one mapping from Rust-side errors to Python exceptions.
//!
//! asyncio code branches on `exc.errno`, so an `io::Error` with an OS code becomes
//! `OSError(errno, strerror)`: CPython's `OSError.__new__` then picks the matching
//! subclass (`BlockingIOError`, `PermissionError`, `FileNotFoundError`, ...), exactly as
//! if the failing call had been made from Python.

use std::io;

use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::PyErr;

/// `io::Error` → `OSError` subclass carrying the real errno.
#[cold]
pub fn os_error(err: io::Error) -> PyErr {
    match err.raw_os_error() {
        Some(code) => {
            let text = io::Error::from_raw_os_error(code).to_string();
            // Drop Rust's " (os error N)" suffix: Python shows the errno separately.
            let strerror = match text.rfind(" (os error") {
                Some(cut) => text[..cut].to_owned(),
                None => text,
            };
            PyOSError::new_err((code, strerror))
        }
        None => PyOSError::new_err(err.to_string()),
    }
}

/// asyncio's message for any use of a closed loop.
#[cold]
pub fn loop_closed() -> PyErr {
    PyRuntimeError::new_err("Event loop is closed")
}
