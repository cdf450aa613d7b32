//! Write flow control: the water marks of a transport's pending writes and whether its
//! protocol was told to pause writing.
//!
//! asyncio takes the marks as given (`set_write_buffer_limits(high=1000.0)` is fine) and
//! gives them back unchanged from `get_write_buffer_limits()`, so a mark is a [`Limit`]:
//! the Python `int` or `float` it was given. Comparisons with buffer sizes are exact for
//! ints and done as floats for floats, as Python compares them.
//!
//! Invariants: `low <= high`, both `>= 0`; `paused` is true from the `pause_writing()`
//! call until the `resume_writing()` call.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyFloat;

/// Default high-water mark of the write buffer (asyncio's 64 KiB).
const DEFAULT_HIGH_WATER: i64 = 64 * 1024;

/// A water mark as Python gave it.
#[derive(Clone, Copy, Debug, PartialEq, FromPyObject, IntoPyObject)]
pub enum Limit {
    Int(i64),
    Float(f64),
}

impl Limit {
    fn as_f64(self) -> f64 {
        match self {
            Limit::Int(v) => v as f64,
            Limit::Float(v) => v,
        }
    }

    /// `size > self`, as Python compares an int with an int or a float.
    fn exceeded_by(self, size: usize) -> bool {
        match self {
            Limit::Int(v) => i128::from(v) < size as i128,
            Limit::Float(v) => (size as f64) > v,
        }
    }

    /// `4 * self` (the high mark from a low one).
    fn times_four(self) -> Limit {
        match self {
            Limit::Int(v) => Limit::Int(v.saturating_mul(4)),
            Limit::Float(v) => Limit::Float(v * 4.0),
        }
    }

    /// `self // 4` (the low mark from a high one).
    fn floor_quarter(self) -> Limit {
        match self {
            Limit::Int(v) => Limit::Int(v.div_euclid(4)),
            Limit::Float(v) => Limit::Float((v / 4.0).floor()),
        }
    }

    /// `repr(self)` as Python writes it.
    fn python_repr(self, py: Python<'_>) -> PyResult<String> {
        match self {
            Limit::Int(v) => Ok(v.to_string()),
            Limit::Float(v) => Ok(PyFloat::new(py, v).repr()?.to_string()),
        }
    }
}

/// The water marks of pending writes and the protocol's pause state.
pub struct FlowControl {
    pub high: Limit,
    pub low: Limit,
    pub paused: bool,
}

impl FlowControl {
    pub fn new() -> Self {
        FlowControl {
            high: Limit::Int(DEFAULT_HIGH_WATER),
            low: Limit::Int(DEFAULT_HIGH_WATER / 4),
            paused: false,
        }
    }

    /// Whether `pause_writing()` is due at buffer size `size` (then marks it paused).
    pub fn pause_due(&mut self, size: usize) -> bool {
        let due = !self.paused && self.high.exceeded_by(size);
        self.paused |= due;
        due
    }

    /// Whether `resume_writing()` is due at buffer size `size` (then marks it running).
    pub fn resume_due(&mut self, size: usize) -> bool {
        let due = self.paused && !self.low.exceeded_by(size);
        self.paused &= !due;
        due
    }

    /// asyncio's `_set_write_buffer_limits`: the `(high, low)` marks for the given
    /// arguments (its defaults), or its `ValueError`.
    pub fn checked_limits(
        py: Python<'_>,
        high: Option<Limit>,
        low: Option<Limit>,
    ) -> PyResult<(Limit, Limit)> {
        let high = high.unwrap_or_else(|| match low {
            Some(low) => low.times_four(),
            None => Limit::Int(DEFAULT_HIGH_WATER),
        });
        let low = low.unwrap_or_else(|| high.floor_quarter());
        if !(high.as_f64() >= low.as_f64() && low.as_f64() >= 0.0) {
            return Err(PyValueError::new_err(format!(
                "high ({}) must be >= low ({}) must be >= 0",
                high.python_repr(py)?,
                low.python_repr(py)?
            )));
        }
        Ok((high, low))
    }
}
