//! The TLS record pump's hot path in Rust: what happens to each TLS record received and
//! each application write once the handshake is done.
//!
//! TLS on ferroloop is asyncio's own `sslproto.SSLProtocol` (so every `SSLContext`
//! setting, the handshake, shutdown, timeouts, error types and messages are asyncio's)
//! in a subclass, `ferroloop._tls.SSLProtocol` (`TLS_PROTOCOL`; Python 3.11+, whose
//! `sslproto` this module follows). In the `WRAPPED` state — the whole life of a connection between
//! handshake and shutdown — two paths skip its Python methods:
//!
//! * records read by a `StreamTransport` whose protocol is that subclass go to
//!   [`records_received`] instead of `get_buffer`/`buffer_updated`: into the incoming
//!   `MemoryBIO`, then decrypted and handed to the application protocol, then whatever
//!   the TLS object has to send is written to the raw transport (`_do_read`,
//!   `_do_read__copied`, `_process_outgoing` and the flow-control checks, step by step);
//! * `write()` on the application's transport (`ferroloop._tls._SSLProtocolTransport`) is
//!   [`tls_app_write`]: encrypt, write the records (`_write_appdata` + `_do_write`).
//!
//! Every other state, every less common branch (a write backlog, a `BufferedProtocol`
//! application, a water mark crossed, close_notify, an error) calls the `SSLProtocol`
//! method asyncio would have called at that point, so state changes happen in asyncio's
//! code. The `SSLObject`'s own methods are skipped when it is exactly `ssl.SSLObject`
//! (they only forward to its C object, `_sslobj`); a context's custom `sslobject_class`
//! is called as is.
//!
//! Invariant: after each step the protocol's attributes (`_write_backlog`,
//! `_write_buffer_size`, the pause flags) are what asyncio's methods would have left.
//! One deliberate shortcut, observably the same: after a successful `read()` with
//! nothing left in the incoming BIO nor in the TLS object, the next `read()` could only
//! raise `SSLWantReadError`, so it is not made.

use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PySlice, PyString, PyTuple};

use crate::py::{self, Cached};

/// What the pump compares with and catches, from `asyncio.sslproto` and `ssl`.
struct Names {
    wrapped: Py<PyAny>,
    do_handshake: Py<PyAny>,
    flushing: Py<PyAny>,
    shutdown: Py<PyAny>,
    /// `sslproto.SSLAgainErrors`: `(SSLWantReadError, SSLSyscallError)`.
    again_errors: Py<PyAny>,
    ssl_object: Py<PyAny>,
}

static NAMES: Cached<Names> = Cached::new();

fn names(py: Python<'_>) -> PyResult<&'static Names> {
    NAMES.get_or_try_init(py, || {
        let sslproto = py.import("asyncio.sslproto")?;
        let state = sslproto.getattr("SSLProtocolState")?;
        let member = |name: &str| state.getattr(name).map(Bound::unbind);
        Ok::<_, PyErr>(Names {
            wrapped: member("WRAPPED")?,
            do_handshake: member("DO_HANDSHAKE")?,
            flushing: member("FLUSHING")?,
            shutdown: member("SHUTDOWN")?,
            again_errors: sslproto.getattr("SSLAgainErrors")?.unbind(),
            ssl_object: py.import("ssl")?.getattr("SSLObject")?.unbind(),
        })
    })
}

/// An `SSLProtocol` and its instance dict: asyncio keeps the protocol's state in
/// instance attributes, so the pump reads them from the dict (one lookup instead of a
/// full attribute lookup each), falling back to the class for the rest (`max_size`).
struct Proto<'py> {
    obj: Bound<'py, PyAny>,
    dict: Bound<'py, PyDict>,
}

impl<'py> Proto<'py> {
    fn of(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        let dict = obj.getattr(intern!(obj.py(), "__dict__"))?.cast_into::<PyDict>()?;
        Ok(Proto { obj: obj.clone(), dict })
    }

    fn get(&self, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        match self.dict.get_item(name)? {
            Some(value) => Ok(value),
            None => self.obj.getattr(name),
        }
    }

    fn flag(&self, name: &Bound<'py, PyString>) -> PyResult<bool> {
        self.get(name)?.is_truthy()
    }

    fn size(&self, name: &Bound<'py, PyString>) -> PyResult<usize> {
        self.get(name)?.extract()
    }

    /// Calls one of asyncio's `SSLProtocol` methods.
    fn call(&self, method: &Bound<'py, PyString>) -> PyResult<()> {
        self.obj.call_method0(method).map(drop)
    }

    /// The object to call `read`/`write`/`pending` on: the C object inside an exact
    /// `ssl.SSLObject`, else the TLS object itself.
    fn tls_object(&self, names: &Names) -> PyResult<Bound<'py, PyAny>> {
        let py = self.obj.py();
        let sslobj = self.get(intern!(py, "_sslobj"))?;
        if sslobj.get_type().is(names.ssl_object.bind(py)) {
            return sslobj.getattr(intern!(py, "_sslobj"));
        }
        Ok(sslobj)
    }

    /// An error of a step asyncio runs under `except Exception`: to `_fatal_error(exc,
    /// 'Fatal error on SSL protocol')`; anything else (`KeyboardInterrupt`, ...)
    /// propagates.
    fn fatal_on_exception(&self, result: PyResult<()>) -> PyResult<()> {
        let py = self.obj.py();
        match result {
            Err(err) if err.is_instance_of::<PyException>(py) => {
                self.obj.call_method1(
                    intern!(py, "_fatal_error"),
                    (err.into_value(py), "Fatal error on SSL protocol"),
                )?;
                Ok(())
            }
            other => other,
        }
    }
}

fn pending(bio: &Bound<'_, PyAny>) -> PyResult<usize> {
    bio.getattr(intern!(bio.py(), "pending"))?.extract()
}

/// `SSLProtocol.buffer_updated` for records read into `records`.
pub fn records_received(protocol: &Bound<'_, PyAny>, records: Bound<'_, PyBytes>) -> PyResult<()> {
    let py = protocol.py();
    let names = names(py)?;
    let p = Proto::of(protocol)?;
    p.get(intern!(py, "_incoming"))?
        .call_method1(intern!(py, "write"), (records,))?;
    let state = p.get(intern!(py, "_state"))?;
    if state.is(names.wrapped.bind(py)) {
        return read_wrapped(names, &p);
    }
    if state.is(names.do_handshake.bind(py)) {
        p.call(intern!(py, "_do_handshake"))
    } else if state.is(names.flushing.bind(py)) {
        p.call(intern!(py, "_do_flush"))
    } else if state.is(names.shutdown.bind(py)) {
        p.call(intern!(py, "_do_shutdown"))
    } else {
        Ok(())
    }
}

/// `_do_read` in the `WRAPPED` state.
fn read_wrapped(names: &Names, p: &Proto<'_>) -> PyResult<()> {
    let py = p.obj.py();
    let result = (|| {
        if !p.flag(intern!(py, "_app_reading_paused"))? {
            if p.flag(intern!(py, "_app_protocol_is_buffer"))? {
                p.call(intern!(py, "_do_read__buffered"))?;
            } else {
                read_copied(names, p)?;
            }
            if p.flag(intern!(py, "_write_backlog"))? {
                p.call(intern!(py, "_do_write"))?;
            } else {
                process_outgoing(p)?;
            }
        }
        control_ssl_reading(p)
    })();
    p.fatal_on_exception(result)
}

/// `_do_read__copied`: everything the TLS object can decrypt now, in one
/// `data_received`; close_notify starts the shutdown.
fn read_copied(names: &Names, p: &Proto<'_>) -> PyResult<()> {
    let py = p.obj.py();
    let reader = p.tls_object(names)?;
    let incoming = p.get(intern!(py, "_incoming"))?;
    let max_size = p.get(intern!(py, "max_size"))?;
    let mut chunks: Vec<Bound<'_, PyAny>> = Vec::new();
    let mut close_notify = false;
    loop {
        match reader.call_method1(intern!(py, "read"), (&max_size,)) {
            Ok(chunk) if chunk.len()? == 0 => {
                close_notify = true;
                break;
            }
            Ok(chunk) => chunks.push(chunk),
            Err(err) if err.matches(py, names.again_errors.bind(py))? => break,
            Err(err) => return Err(err),
        }
        // Nothing left to decrypt: the next read() would raise SSLWantReadError.
        if pending(&incoming)? == 0
            && reader.call_method0(intern!(py, "pending"))?.extract::<usize>()? == 0
        {
            break;
        }
    }
    if !chunks.is_empty() {
        let data = if chunks.len() == 1 {
            chunks.pop().expect("one chunk")
        } else {
            PyBytes::new(py, b"").call_method1(intern!(py, "join"), (PyList::new(py, chunks)?,))?
        };
        p.get(intern!(py, "_app_protocol"))?
            .call_method1(intern!(py, "data_received"), (data,))?;
    }
    if close_notify {
        p.call(intern!(py, "_call_eof_received"))?;
        p.call(intern!(py, "_start_shutdown"))?;
    }
    Ok(())
}

/// `_process_outgoing`: the records the TLS object produced, to the raw transport.
fn process_outgoing(p: &Proto<'_>) -> PyResult<()> {
    let py = p.obj.py();
    let outgoing = p.get(intern!(py, "_outgoing"))?;
    if !p.flag(intern!(py, "_ssl_writing_paused"))? {
        let records = outgoing.call_method0(intern!(py, "read"))?;
        if records.len()? > 0 {
            p.get(intern!(py, "_transport"))?
                .call_method1(intern!(py, "write"), (records,))?;
        }
    }
    // `_control_app_writing`, called only when a water mark is crossed.
    let buffered = pending(&outgoing)? + p.size(intern!(py, "_write_buffer_size"))?;
    let marks = WaterMarks {
        paused: intern!(py, "_app_writing_paused"),
        low: intern!(py, "_outgoing_low_water"),
        high: intern!(py, "_outgoing_high_water"),
        control: intern!(py, "_control_app_writing"),
    };
    marks.control_if_crossed(p, buffered)
}

/// `_control_ssl_reading`, called only when a water mark is crossed.
fn control_ssl_reading(p: &Proto<'_>) -> PyResult<()> {
    let py = p.obj.py();
    let buffered = pending(&p.get(intern!(py, "_incoming"))?)?;
    let marks = WaterMarks {
        paused: intern!(py, "_ssl_reading_paused"),
        low: intern!(py, "_incoming_low_water"),
        high: intern!(py, "_incoming_high_water"),
        control: intern!(py, "_control_ssl_reading"),
    };
    marks.control_if_crossed(p, buffered)
}

/// One of `SSLProtocol`'s two flow controls (app writes, socket reads), named by its
/// attributes: the pause flag, the water marks, and the method that pauses or resumes.
struct WaterMarks<'a, 'py> {
    paused: &'a Bound<'py, PyString>,
    low: &'a Bound<'py, PyString>,
    high: &'a Bound<'py, PyString>,
    control: &'a Bound<'py, PyString>,
}

impl<'py> WaterMarks<'_, 'py> {
    /// Calls asyncio's `control` method only when `buffered` crossed the mark that
    /// changes the pause state (the high one while not paused, the low one while paused):
    /// otherwise it would do nothing.
    fn control_if_crossed(&self, p: &Proto<'py>, buffered: usize) -> PyResult<()> {
        let crossed = if p.flag(self.paused)? {
            buffered <= p.size(self.low)?
        } else {
            buffered >= p.size(self.high)?
        };
        if crossed {
            p.call(self.control)?;
        }
        Ok(())
    }
}

/// `ferroloop._tls._SSLProtocolTransport.write(data)`: asyncio's check, then
/// `_write_appdata((data,))`, the common case (connected, nothing waiting) in Rust.
#[pyfunction]
pub fn tls_app_write(transport: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = transport.py();
    if !(data.is_instance_of::<PyBytes>()
        || data.is_instance_of::<PyByteArray>()
        || data.is_instance_of::<PyMemoryView>())
    {
        return Err(PyTypeError::new_err(format!(
            "data: expecting a bytes-like instance, got {}",
            data.get_type().name()?
        )));
    }
    if !data.is_truthy()? {
        return Ok(());
    }
    let protocol = transport.getattr(intern!(py, "_ssl_protocol"))?;
    let names = names(py)?;
    let fast = if protocol.is_none() {
        None
    } else {
        let p = Proto::of(&protocol)?;
        let wrapped = p.get(intern!(py, "_state"))?.is(names.wrapped.bind(py));
        (wrapped && !p.flag(intern!(py, "_write_backlog"))?).then_some(p)
    };
    let Some(p) = fast else {
        // Not connected (asyncio counts and warns), still handshaking (it keeps the data
        // for later) or writes already waiting (they go first): asyncio's method.
        let writes = PyTuple::new(py, [data])?;
        protocol.call_method1(intern!(py, "_write_appdata"), (writes,))?;
        return Ok(());
    };
    let result = write_first(names, &p, data).and_then(|()| process_outgoing(&p));
    p.fatal_on_exception(result)
}

/// `_write_appdata` + `_do_write` for `data` with an empty backlog: written until the TLS
/// object takes it all or asks to wait; what it has not taken stays in the backlog,
/// counted in `_write_buffer_size`.
fn write_first(names: &Names, p: &Proto<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = p.obj.py();
    let writer = p.tls_object(names)?;
    let mut rest = data.clone();
    let mut rest_len = data.len()?;
    let failure = loop {
        match writer.call_method1(intern!(py, "write"), (&rest,)) {
            Ok(count) => {
                let count: usize = count.extract()?;
                if count >= rest_len {
                    return Ok(());
                }
                let tail = PySlice::new(py, count as isize, rest_len as isize, 1);
                rest = rest.get_item(tail)?;
                rest_len -= count;
            }
            Err(err) if err.matches(py, names.again_errors.bind(py))? => break None,
            Err(err) => break Some(err),
        }
    };
    p.get(intern!(py, "_write_backlog"))?
        .call_method1(intern!(py, "append"), (rest,))?;
    let buffered = p.size(intern!(py, "_write_buffer_size"))? + rest_len;
    p.obj.setattr(intern!(py, "_write_buffer_size"), buffered)?;
    failure.map_or(Ok(()), Err)
}

/// Whether `protocol` is a `ferroloop._tls.TLS_PROTOCOL` (its records go to
/// [`records_received`]); never on Pythons whose `sslproto` this module does not follow.
pub fn is_tls_protocol(protocol: &Bound<'_, PyAny>) -> PyResult<bool> {
    let class = py::tls_protocol_type(protocol.py())?;
    Ok(!class.is_none() && protocol.get_type().is(class))
}
