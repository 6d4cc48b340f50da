//! The route table: every route is registered with the [`Access`] it requires,
//! and that declaration is also what enforces it (the guard is attached here,
//! not by each handler). [`Routes::table`] lists every route, so a test can
//! attack each one and the public allowlist stays short and visible.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodRouter, on};

use super::guard::Guard;
use crate::identity::{Access, TokenKeys, VerifiedTokens};

/// One registered route, as the route-table test and the docs see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

struct Entry<S> {
    info: RouteInfo,
    route: MethodRouter<S>,
}

/// Routes with their declared access; turned into a router in one place.
/// Generic over the application's state `S`: a capability's handlers take
/// the sub-state they need (`State<T>` with `T: FromRef<S>`).
pub struct Routes<S> {
    entries: Vec<Entry<S>>,
}

impl<S> Default for Routes<S> {
    fn default() -> Self {
        Self { entries: Vec::new() }
    }
}

macro_rules! method {
    ($name:ident, $method:ident) => {
        pub fn $name<H, T>(self, path: &'static str, access: Access, handler: H) -> Self
        where
            H: Handler<T, S>,
            T: 'static,
        {
            self.add(Method::$method, path, access, handler)
        }
    };
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Self::default()
    }

    method!(get, GET);
    method!(post, POST);
    method!(put, PUT);
    method!(patch, PATCH);
    method!(delete, DELETE);

    /// A POST whose handler streams a body larger than the JSON limit and
    /// enforces its own bound while reading (file uploads).
    pub fn post_streaming<H, T>(self, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add_with(Method::POST, path, access, handler, |route| route.layer(DefaultBodyLimit::disable()))
    }

    fn add<H, T>(self, method: Method, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.add_with(method, path, access, handler, |route| route)
    }

    fn add_with<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        handler: H,
        wrap: impl FnOnce(MethodRouter<S>) -> MethodRouter<S>,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = axum::routing::MethodFilter::try_from(method.clone());
        #[allow(clippy::expect_used)] // only the constant methods above reach here
        let route = wrap(on(filter.expect("a routable method"), handler));
        self.entries.push(Entry { info: RouteInfo { method, path, access }, route });
        self
    }

    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.entries.extend(other.entries);
        self
    }

    pub fn table(&self) -> Vec<RouteInfo> {
        self.entries.iter().map(|e| e.info.clone()).collect()
    }

    /// The axum router, with the guard in front of every non-public route.
    /// One [`VerifiedTokens`] for all of them: a token verified on one route is known on every other.
    pub fn into_router(self, keys: &Arc<TokenKeys>) -> Router<S> {
        let verifier = Arc::new(VerifiedTokens::new(keys.clone()));
        self.entries.into_iter().fold(Router::new(), |router, Entry { info, route }| {
            let route = match info.access {
                Access::Public => route,
                access => route.route_layer(Guard { verifier: verifier.clone(), access }),
            };
            router.route(info.path, route)
        })
    }
}
