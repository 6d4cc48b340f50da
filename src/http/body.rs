//! Request bodies a handler did not read to the end (a 413, a refusal before
//! the body mattered, a timeout) are kept until the response has been sent,
//! then read and discarded for a bounded time and size.
//!
//! Why (measured, tests/moat/http_edge.rs): dropping an unread HTTP/2 request
//! body before the response is sent makes hyper reset the stream with
//! `CANCEL`, and clients discard the response (curl: "stream error"), so a
//! client that sent a 2 MiB login body never saw its 413. Kept until the
//! response is done, the reset is `NO_ERROR` (RFC 9113 §8.1: the client stops
//! sending and keeps the response). Over HTTP/1.1 a client that writes its
//! whole body before reading (a browser) would otherwise meet a connection
//! closed with unread data — a TCP reset that can destroy the response; the
//! bounded drain reads the rest first. No crate does this for hyper, hence
//! these two small wrappers.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use http_body_util::BodyExt as _;

/// Longest time spent discarding a parked body after the response.
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// Most bytes discarded from a parked body after the response.
const DRAIN_BYTES: usize = 32 * 1024 * 1024;

type Slot = Arc<Mutex<Option<Body>>>;

/// Wraps `request`'s body so that, if it is dropped unread, it is parked for
/// [`after_response`]. Requests without a body are left alone (no cost).
pub fn park_unread(request: &mut axum::extract::Request) -> Option<Slot> {
    if request.body().is_end_stream() {
        return None;
    }
    let slot = Slot::default();
    let body = std::mem::take(request.body_mut());
    *request.body_mut() = Body::new(Parking { inner: Some(body), slot: slot.clone() });
    Some(slot)
}

/// Wraps `response`'s body so that a parked request body is drained once the response body is done.
pub fn after_response(response: axum::response::Response, slot: Option<Slot>) -> axum::response::Response {
    match slot {
        None => response,
        Some(slot) => response.map(|body| Body::new(DrainAfter { inner: body, slot })),
    }
}

struct Parking {
    inner: Option<Body>,
    slot: Slot,
}

impl HttpBody for Parking {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        match self.get_mut().inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map(HttpBody::size_hint).unwrap_or_default()
    }
}

impl Drop for Parking {
    fn drop(&mut self) {
        if let Some(body) = self.inner.take().filter(|b| !b.is_end_stream()) {
            *self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(body);
        }
    }
}

struct DrainAfter {
    inner: Body,
    slot: Slot,
}

impl HttpBody for DrainAfter {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for DrainAfter {
    fn drop(&mut self) {
        let parked = self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(body) = parked
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(drain(body));
        }
    }
}

async fn drain(mut body: Body) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut read = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > DRAIN_BYTES {
                return;
            }
        }
    })
    .await;
}
