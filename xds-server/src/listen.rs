//! Binding the ADS listener with an accept queue deep enough for a reconnect storm.
//!
//! When every proxy reconnects at once (a control-plane restart, a network blip), thousands
//! of connections arrive within a second. tokio's `TcpListener::bind` asks for a backlog of
//! 1024; past it the kernel drops or resets connections and the proxies back off, which only
//! spreads the storm out. [`listen`] asks for [`BACKLOG`] (the kernel caps it at
//! `net.core.somaxconn`, 4096 by default on current kernels).

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// The accept queue asked for.
pub const BACKLOG: u32 = 4096;

/// Binds `address` (port 0 picks a free port) and listens with [`BACKLOG`].
pub fn listen(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std's and tokio's bind do on Unix: a restarted server can bind at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listens_on_a_free_port_and_accepts() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = listener.local_addr().unwrap();
        assert_ne!(address.port(), 0);
        let (client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(address), listener.accept());
        client.unwrap();
        accepted.unwrap();
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error() {
        let first = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let taken = first.local_addr().unwrap();
        assert!(listen(taken).is_err());
    }
}
