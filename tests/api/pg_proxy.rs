//! A TCP proxy in front of PostgreSQL that a test can cut, stall and restore: an outage or a
//! restart as the server sees it (refused connections, live ones dropped mid-query), or one
//! connection that goes silent without closing, without touching the database server that
//! the other tests share.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::watch,
};

/// What one forwarded connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Forwarding,
    /// Open at both ends, carrying nothing: half-open as each peer sees it.
    Stalled,
    Cut,
}

/// Each open connection by the local port of its upstream side, which PostgreSQL reports
/// as the backend's `client_port`.
type Links = Arc<Mutex<HashMap<u16, watch::Sender<Link>>>>;

pub struct PgProxy {
    pub addr: SocketAddr,
    up: Arc<watch::Sender<bool>>,
    links: Links,
    accept: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    /// Forwards to `target` (host:port); starts up or down as told.
    pub async fn start(target: String, up: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a proxy port");
        let addr = listener.local_addr().unwrap();
        let (state, _) = watch::channel(up);
        let state = Arc::new(state);
        let links = Links::default();
        let accept = tokio::spawn({
            let (state, links) = (state.clone(), links.clone());
            async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if !*state.borrow() {
                        // Down: the connection is closed before PostgreSQL says anything.
                        drop(inbound);
                        continue;
                    }
                    tokio::spawn(forward(
                        inbound,
                        target.clone(),
                        state.clone(),
                        links.clone(),
                    ));
                }
            }
        });
        Self {
            addr,
            up: state,
            links,
            accept,
        }
    }

    /// Refuses new connections and cuts every open one.
    pub fn down(&self) {
        self.up.send_replace(false);
        for link in self.links.lock().unwrap().values() {
            link.send_replace(Link::Cut);
        }
    }

    pub fn up(&self) {
        self.up.send_replace(true);
    }

    /// The upstream ports (PostgreSQL's `client_port`) of the connections open now.
    pub fn connections(&self) -> Vec<u16> {
        self.links.lock().unwrap().keys().copied().collect()
    }

    /// The connection stops carrying bytes either way but stays open at both ends.
    pub fn stall(&self, port: u16) {
        self.set(port, Link::Stalled);
    }

    /// A stalled connection carries bytes again.
    pub fn resume(&self, port: u16) {
        self.set(port, Link::Forwarding);
    }

    /// The connection is closed at both ends.
    pub fn cut(&self, port: u16) {
        self.set(port, Link::Cut);
    }

    fn set(&self, port: u16, to: Link) {
        let links = self.links.lock().unwrap();
        let link = links.get(&port).expect("an open connection on that port");
        link.send_replace(to);
    }

    /// `url` with its host:port replaced by the proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let target = host_port(url);
        url.replacen(&target, &self.addr.to_string(), 1)
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.down();
        self.accept.abort();
    }
}

async fn forward(inbound: TcpStream, target: String, up: Arc<watch::Sender<bool>>, links: Links) {
    let Ok(outbound) = TcpStream::connect(&target).await else {
        return;
    };
    let Ok(port) = outbound.local_addr().map(|a| a.port()) else {
        return;
    };
    let (state, link) = watch::channel(Link::Forwarding);
    links.lock().unwrap().insert(port, state);
    // Registered first, then checked: a `down` in between cannot miss this connection.
    if *up.borrow() {
        let (from_client, to_client) = inbound.into_split();
        let (from_server, to_server) = outbound.into_split();
        tokio::select! {
            _ = pump(from_client, to_server, link.clone()) => {}
            _ = pump(from_server, to_client, link) => {}
        }
    }
    links.lock().unwrap().remove(&port);
}

/// Copies one direction while the link forwards; returns (closing both) when it is cut or
/// either end closes.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut link: watch::Receiver<Link>) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let Ok(state) = link.wait_for(|l| *l != Link::Stalled).await.map(|l| *l) else {
            return;
        };
        if state == Link::Cut {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Stalled or cut meanwhile: nothing read is lost (`read` is cancel-safe).
            _ = link.changed() => continue,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The `host:port` of a `postgres://user[:password]@host:port/db?…` URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}
