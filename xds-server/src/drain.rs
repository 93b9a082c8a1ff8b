//! The ADS connections being served, so that shutdown can close those still open at the
//! end of its grace period.
//!
//! tonic owns each connection once accepted and offers no way to close one. Each accepted
//! socket is kept twice: the tokio stream tonic serves, and a duplicate handle of the same
//! socket kept here. Shutting the duplicate down (`shutdown(2)`, both directions) ends the
//! socket for both: the connection's task reads end-of-file and ends.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::debug;

/// The connections open now, each by a duplicate handle of its socket.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, std::net::TcpStream>>,
}

impl Connections {
    /// The connections `listener` accepts, each tracked here until it is dropped.
    pub(crate) fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<Tracked>> + Send + 'static {
        TcpListenerStream::new(listener).map(move |accepted| self.track(accepted?))
    }

    fn track(self: &Arc<Self>, io: TcpStream) -> io::Result<Tracked> {
        let std = io.into_std()?;
        let duplicate = std.try_clone();
        let io = TcpStream::from_std(std)?;
        let id = match duplicate {
            Ok(handle) => {
                let id = self.next.fetch_add(1, Ordering::Relaxed);
                lock(&self.open).insert(id, handle);
                Some(id)
            }
            // Out of file descriptors: the connection is served, only not closable early.
            Err(e) => {
                debug!(error = %e, "cannot duplicate an ADS socket");
                None
            }
        };
        Ok(Tracked {
            io,
            id,
            connections: self.clone(),
        })
    }

    /// Shuts down every connection still open; returns how many there were.
    pub(crate) fn close_all(&self) -> usize {
        let open = std::mem::take(&mut *lock(&self.open));
        for socket in open.values() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        open.len()
    }

    /// How many connections are open.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.open).len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// An accepted connection, forgotten by [`Connections`] when dropped.
#[derive(Debug)]
pub(crate) struct Tracked {
    io: TcpStream,
    id: Option<u64>,
    connections: Arc<Connections>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            lock(&self.connections.open).remove(&id);
        }
    }
}

impl Connected for Tracked {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn closing_ends_the_served_socket_and_dropping_forgets_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(Connections::default());
        let mut incoming = Box::pin(connections.clone().incoming(listener));
        let _client = TcpStream::connect(address).await.unwrap();
        let mut served = incoming.next().await.unwrap().unwrap();
        assert_eq!(connections.len(), 1);
        // A read that waits on the socket is woken by the shutdown of its duplicate.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            let n = served.read(&mut buf).await;
            (n.ok(), served)
        });
        tokio::task::yield_now().await;
        assert_eq!(connections.close_all(), 1);
        let (read, served) = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
            .await
            .expect("the read was not woken")
            .unwrap();
        assert_eq!(read, Some(0), "end of file");
        assert_eq!(connections.len(), 0);
        let _second = TcpStream::connect(address).await.unwrap();
        let second = incoming.next().await.unwrap().unwrap();
        assert_eq!(connections.len(), 1);
        drop((served, second));
        assert_eq!(connections.len(), 0);
    }
}
