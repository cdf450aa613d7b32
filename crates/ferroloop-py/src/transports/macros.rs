//! `native_transport!`: the one `#[pymethods]` block of a native transport pyclass, made
//! of the methods every kind shares (thin shims over `super::core`) and the kind's own.

/// Declares a native transport pyclass `$ty` with kind state `$kind` (the `NativeTransport`
/// variant `$variant`): its `Transport` impl (with the `{ ... }` overrides, if given), and
/// its one `#[pymethods]` block made of the methods every kind shares (thin shims over this
/// module; the face gets the base ones and the groups in `$ty::FACE_METHODS`)
/// followed by the kind's own `$($methods)*`.
macro_rules! native_transport {
    ($ty:ident, $kind:ty, $variant:ident $(, { $($overrides:tt)* })?; $($methods:tt)*) => {
        impl $crate::transports::core::Transport for $ty {
            type Kind = $kind;
            $($($overrides)*)?

            fn common(&self) -> &$crate::transports::core::Common {
                &self.common
            }

            fn state(&self) -> &::parking_lot::Mutex<$crate::transports::core::State<$kind>> {
                &self.state
            }

            fn native(slf: &::pyo3::Bound<'_, Self>) -> $crate::transports::NativeTransport {
                $crate::transports::NativeTransport::$variant(slf.clone().unbind())
            }
        }

        #[::pyo3::pymethods]
        impl $ty {
            /// Makes `face` (see `ferroloop._transports`) the transport users see.
            fn _bind_face(
                slf: &::pyo3::Bound<'_, Self>,
                face: ::pyo3::Bound<'_, ::pyo3::PyAny>,
            ) -> ::pyo3::PyResult<()> {
                $crate::transports::core::bind_face(slf, &face, Self::FACE_METHODS)
            }

            /// Starts watching for data (scheduled right after `connection_made`).
            fn _start_reading(slf: &::pyo3::Bound<'_, Self>) -> ::pyo3::PyResult<()> {
                $crate::transports::core::start_reading(slf)
            }

            fn close(slf: &::pyo3::Bound<'_, Self>) -> ::pyo3::PyResult<()> {
                $crate::transports::core::close(slf)
            }

            fn abort(slf: &::pyo3::Bound<'_, Self>) -> ::pyo3::PyResult<()> {
                $crate::transports::core::force_close(slf, None)
            }

            /// asyncio's `_force_close(exc)` (asyncio's SSLProtocol calls it on fatal
            /// errors): drop pending writes, `connection_lost(exc)` soon.
            fn _force_close(
                slf: &::pyo3::Bound<'_, Self>,
                exc: Option<::pyo3::Py<::pyo3::PyAny>>,
            ) -> ::pyo3::PyResult<()> {
                $crate::transports::core::force_close(slf, exc)
            }

            fn is_closing(&self) -> bool {
                self.state.lock().closing
            }

            #[pyo3(signature = (name, default=None))]
            fn get_extra_info(
                &self,
                py: ::pyo3::Python<'_>,
                name: &::pyo3::Bound<'_, ::pyo3::PyAny>,
                default: Option<::pyo3::Py<::pyo3::PyAny>>,
            ) -> ::pyo3::PyResult<::pyo3::Py<::pyo3::PyAny>> {
                self.common.get_extra_info(py, name, default)
            }

            fn pause_reading(slf: &::pyo3::Bound<'_, Self>) {
                $crate::transports::core::pause_reading(slf)
            }

            fn resume_reading(slf: &::pyo3::Bound<'_, Self>) -> ::pyo3::PyResult<()> {
                $crate::transports::core::resume_reading(slf)
            }

            fn is_reading(&self) -> bool {
                $crate::transports::core::is_reading(self)
            }

            #[pyo3(signature = (high=None, low=None))]
            fn set_write_buffer_limits(
                slf: &::pyo3::Bound<'_, Self>,
                high: Option<$crate::transports::flow::Limit>,
                low: Option<$crate::transports::flow::Limit>,
            ) -> ::pyo3::PyResult<()> {
                $crate::transports::core::set_write_buffer_limits(slf, high, low)
            }

            fn get_write_buffer_limits(
                &self,
            ) -> ($crate::transports::flow::Limit, $crate::transports::flow::Limit) {
                $crate::transports::core::get_write_buffer_limits(self)
            }

            fn get_write_buffer_size(&self) -> usize {
                $crate::transports::core::Pending::size(&self.state.lock().kind)
            }

            fn get_protocol(&self, py: ::pyo3::Python<'_>) -> ::pyo3::Py<::pyo3::PyAny> {
                $crate::transports::core::protocol(self, py)
            }

            fn set_protocol(
                slf: &::pyo3::Bound<'_, Self>,
                protocol: ::pyo3::Bound<'_, ::pyo3::PyAny>,
            ) -> ::pyo3::PyResult<()> {
                <Self as $crate::transports::core::Transport>::set_protocol_of(slf, protocol)
            }

            /// Runs `protocol.connection_lost(exc)` once, then closes the socket or pipe
            /// (scheduled by `close`, `abort` and fatal errors).
            fn _call_connection_lost(
                slf: &::pyo3::Bound<'_, Self>,
                exc: Option<::pyo3::Py<::pyo3::PyAny>>,
            ) -> ::pyo3::PyResult<()> {
                <Self as $crate::transports::core::Transport>::connection_lost_of(slf, exc)
            }

            fn __traverse__(
                &self,
                visit: ::pyo3::gc::PyVisit<'_>,
            ) -> Result<(), ::pyo3::PyTraverseError> {
                $crate::transports::core::traverse(self, &visit)
            }

            /// Whether the protocol was told to pause writing (read by the sendfile
            /// fallback).
            #[getter]
            fn _protocol_paused(&self) -> bool {
                self.state.lock().flow.paused
            }

            /// The socket object (asyncio's transports keep it as `_sock`).
            #[getter]
            fn _sock(&self, py: ::pyo3::Python<'_>) -> ::pyo3::Py<::pyo3::PyAny> {
                self.common.sock.clone_ref(py)
            }

            fn __repr__(&self) -> String {
                $crate::transports::core::Transport::repr_text(self)
            }

            $($methods)*
        }
    };
}
pub(crate) use native_transport;
