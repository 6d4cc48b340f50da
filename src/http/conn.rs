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
//! - hyper has no idle timeout for HTTP/2 (its pings only drop peers that stop
//!   answering them, which no client library does), so an idle HTTP/2
//!   connection would hold its place forever. Every admitted connection
//!   therefore tracks its requests ([`Tracked`]: a request is busy until its
//!   response body is done), and an HTTP/2 connection's stream reads as
//!   closed once it has had no request in progress, and written no data, for
//!   the same timeout ([`Counted`]): a response still being delivered to a
//!   slow reader keeps it open (hyper hands the last body bytes over before
//!   they are sent), and bytes just read (a request not yet dispatched) defer
//!   the close briefly. Closing is an end of stream, not a GOAWAY (axum-server
//!   keeps the connection's handle), so a request a client sends at that very
//!   moment fails as on any idle close; clients retry idempotent requests. HTTP/1.1 connections are left to hyper's header timer
//!   (which already closes them when idle), and a connection upgraded to a
//!   WebSocket is never idle-closed: the socket has its own pings and bounds
//!   (docs/websocket.md).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
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
/// A write at least this large, or one that had to wait, is data being
/// delivered (HTTP/2 control frames — pings, window updates — are smaller).
const DATA_WRITE: usize = 64;
/// Bytes just read defer an idle close by this much: they may be a request
/// hyper has read but not yet handed to the service.
const SETTLE: Duration = Duration::from_millis(200);

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

/// An acceptor admitting at most a fixed number of open connections, each
/// closed once idle for `idle` (no request in progress).
#[derive(Clone)]
pub struct Capped<A> {
    inner: A,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    idle: Duration,
    /// Unix second of the last "cap reached" warning (one a minute at most).
    warned: Arc<AtomicU64>,
}

impl<A> Capped<A> {
    pub fn new(inner: A, max: usize, idle: Duration, metrics: Arc<Metrics>) -> Self {
        metrics.connection_limit(max);
        Self { inner, permits: Arc::new(Semaphore::new(max)), metrics, idle, warned: Arc::default() }
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
    type Service = Tracked<A::Service>;
    type Future = BoxFuture<'static, io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.metrics.connection_refused();
            self.warn_at_most_once_a_minute();
            drop(stream);
            return Box::pin(std::future::ready(Err(io::Error::other("connection cap reached"))));
        };
        // Counted from the permit (a TLS handshake holds a place too).
        let place = Place { _permit: permit, metrics: self.metrics.clone() };
        place.metrics.connection_opened();
        let (inner, idle) = (self.inner.clone(), self.idle);
        Box::pin(async move {
            let (stream, service) = inner.accept(stream, service).await?;
            let activity = Arc::new(Activity::new());
            let counted = Counted { inner: stream, _place: place, activity: activity.clone(), idle, timer: None };
            Ok((counted, Tracked { inner: service, activity }))
        })
    }
}

/// A connection's place under the cap: released (and counted out) when dropped.
struct Place {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

/// What a connection is doing: requests in progress, since when it has had
/// none, when it last wrote data or read anything, and whether it became a
/// WebSocket.
struct Activity {
    opened: std::time::Instant,
    busy: AtomicUsize,
    /// Milliseconds after `opened` when the last request ended.
    idle_since: AtomicU64,
    /// Milliseconds after `opened` of the last data written (see [`DATA_WRITE`]).
    wrote: AtomicU64,
    /// Milliseconds after `opened` of the last bytes read.
    read: AtomicU64,
    upgraded: AtomicBool,
    /// It speaks HTTP/2 (seen on its first request).
    h2: AtomicBool,
    /// The connection's reader, woken when its last request ends (its idle
    /// timer starts then, not at the next keep-alive ping).
    reader: futures_util::task::AtomicWaker,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: std::time::Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            wrote: AtomicU64::new(0),
            read: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            reader: futures_util::task::AtomicWaker::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When the connection counts as idle for `idle`; `None` unless it speaks
    /// HTTP/2, while a request is in progress, and once it is a WebSocket.
    fn idle_deadline(&self, idle: Duration) -> Option<tokio::time::Instant> {
        if !self.h2.load(Ordering::Relaxed)
            || self.upgraded.load(Ordering::Acquire)
            || self.busy.load(Ordering::Acquire) > 0
        {
            return None;
        }
        let at = |field: &AtomicU64| self.opened + Duration::from_millis(field.load(Ordering::Acquire));
        let deadline = (at(&self.idle_since) + idle).max(at(&self.wrote) + idle).max(at(&self.read) + SETTLE);
        Some(tokio::time::Instant::from_std(deadline))
    }
}

/// One request in progress on a connection, until its response body is done.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Self {
        activity.busy.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since.fetch_max(self.0.now(), Ordering::AcqRel);
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

/// An admitted connection: holds its place until it closes, and reads as
/// closed once idle (see the module docs).
pub struct Counted<S> {
    inner: S,
    _place: Place,
    activity: Arc<Activity>,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        if let Poll::Ready(read) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            if buf.filled().len() > before {
                this.activity.read.fetch_max(this.activity.now(), Ordering::AcqRel);
            }
            return Poll::Ready(read);
        }
        this.activity.reader.register(cx.waker());
        let Some(deadline) = this.activity.idle_deadline(this.idle) else {
            return Poll::Pending; // (a timer left armed only wakes a read that finds it busy)
        };
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            // Idle too long: end of stream, and the server closes the connection.
            Poll::Ready(()) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S> Counted<S> {
    /// Data is being delivered: a large write, or one that had to wait.
    fn wrote(&self, written: &Poll<io::Result<usize>>) {
        let data = match written {
            Poll::Pending => true,
            Poll::Ready(Ok(n)) => *n >= DATA_WRITE,
            Poll::Ready(Err(_)) => false,
        };
        if data {
            self.activity.wrote.fetch_max(self.activity.now(), Ordering::AcqRel);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&written);
        written
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

/// The connection's service, marking each request busy until its response
/// body is done (and the connection upgraded on a `101`).
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, R, B> tower::Service<http::Request<R>> for Tracked<S>
where
    S: tower::Service<http::Request<R>, Response = http::Response<B>>,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<R>) -> Self::Future {
        if request.version() == http::Version::HTTP_2 {
            self.activity.h2.store(true, Ordering::Relaxed);
        }
        let busy = Busy::new(self.activity.clone());
        TrackedFuture { inner: self.inner.call(request), busy: Some(busy) }
    }
}

pin_project_lite::pin_project! {
    /// A request's response future, busy until the response body is done.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        busy: Option<Busy>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let busy = this.busy.take();
        Poll::Ready(result.map(|response| {
            if response.status() == http::StatusCode::SWITCHING_PROTOCOLS
                && let Some(busy) = &busy
            {
                busy.0.upgraded.store(true, Ordering::Release);
            }
            response.map(|inner| TrackedBody { inner, busy })
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body; its request stops being busy when it is done (or dropped).
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        busy: Option<Busy>,
    }
}

impl<B: http_body::Body> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            this.busy.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
