//! What one client may hold at the connection level, before any request:
//! the number of open connections per instance, how long headers may take,
//! and HTTP/2's per-connection limits (docs/security.md, "The HTTP edge").
//!
//! - [`Capped`] admits at most `MOAT_MAX_CONNECTIONS` connections. Beyond it a
//!   new connection is closed at once, before a TLS handshake or a byte of
//!   HTTP is read (counted in `moat_http_connections_refused_total`); the
//!   connections already open keep working. A WebSocket keeps its connection's
//!   place for as long as it is open.
//! - [`configure`] sets hyper's limits: HTTP/1.1 headers must arrive within
//!   `MOAT_HTTP_HEADER_TIMEOUT`, counted from the moment the connection is
//!   idle — so it is also the idle keep-alive timeout (hyper starts the header
//!   timer as soon as a response is done); HTTP/2 allows 100 concurrent
//!   streams, 16 KiB of headers, and pings an idle peer. The first request of
//!   a connection must arrive within the same timeout (protocol detection
//!   included; set by the caller on the server).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use futures_util::future::BoxFuture;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// HTTP/2 streams one connection may have open at once.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Largest HTTP/2 header list (decoded) a request may carry.
pub const H2_MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Largest HTTP/1.1 read buffer, which bounds a request's head.
pub const H1_MAX_BUF_BYTES: usize = 64 * 1024;
/// HTTP/2 pings an idle peer this often, and drops it if no answer comes as long.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Applies the HTTP/1.1 and HTTP/2 limits to the server's protocol builder.
pub fn configure(builder: &mut Builder<TokioExecutor>, header_timeout: Duration) {
    builder.http1().header_read_timeout(Some(header_timeout)).max_buf_size(H1_MAX_BUF_BYTES);
    builder
        .http2()
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST_BYTES)
        .keep_alive_interval(Some(H2_KEEP_ALIVE))
        .keep_alive_timeout(H2_KEEP_ALIVE);
}

/// An acceptor admitting at most a fixed number of open connections.
#[derive(Clone)]
pub struct Capped<A> {
    inner: A,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    /// Unix second of the last "cap reached" warning (one a minute at most).
    warned: Arc<AtomicU64>,
}

impl<A> Capped<A> {
    pub fn new(inner: A, max: usize, metrics: Arc<Metrics>) -> Self {
        metrics.connection_limit(max);
        Self { inner, permits: Arc::new(Semaphore::new(max)), metrics, warned: Arc::default() }
    }

    fn warn_at_most_once_a_minute(&self) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let last = self.warned.load(Ordering::Relaxed);
        if now >= last + 60 && self.warned.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::warn!("MOAT_MAX_CONNECTIONS reached: new connections are closed until others end");
        }
    }
}

impl<A, I, S> Accept<I, S> for Capped<A>
where
    A: Accept<I, S> + Clone + Send + Sync + 'static,
    A::Future: Send,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
    I: Send + 'static,
    S: Send + 'static,
{
    type Stream = Counted<A::Stream>;
    type Service = A::Service;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.metrics.connection_refused();
            self.warn_at_most_once_a_minute();
            drop(stream);
            return Box::pin(std::future::ready(Err(io::Error::other("connection cap reached"))));
        };
        let (inner, metrics) = (self.inner.clone(), self.metrics.clone());
        Box::pin(async move {
            let (stream, service) = inner.accept(stream, service).await?;
            metrics.connection_opened();
            Ok((Counted { inner: stream, _permit: permit, metrics }, service))
        })
    }
}

/// An admitted connection: holds its place until it closes.
pub struct Counted<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl<S> Drop for Counted<S> {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
