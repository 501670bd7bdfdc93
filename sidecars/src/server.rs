//! Serving a sidecar's routes: plain HTTP/1.1 on a loopback listener, stopped on request
//! (the CLI stops on SIGTERM / SIGINT; tests and in-process callers hold a [`RunningSidecar`]).

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A sidecar served on a background task.
#[derive(Debug)]
pub struct RunningSidecar {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Serves `router` on `listener` on a background task of the current runtime.
pub fn spawn(listener: TcpListener, router: Router) -> std::io::Result<RunningSidecar> {
    let local_addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, router, async move {
        let _ = stopped.await;
    }));
    Ok(RunningSidecar {
        local_addr,
        stop,
        task,
    })
}

/// Binds `addr` and serves `router` there on a background task.
pub async fn spawn_at(addr: SocketAddr, router: Router) -> std::io::Result<RunningSidecar> {
    spawn(TcpListener::bind(addr).await?, router)
}

impl RunningSidecar {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Its base URL, `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting, waits for requests in flight, and returns how serving ended.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.task.await.map_err(std::io::Error::other)?
    }
}
