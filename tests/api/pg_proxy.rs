//! A TCP proxy in front of PostgreSQL that a test can cut and restore: an outage or a
//! restart as the server sees it (refused connections, live ones dropped mid-query),
//! without touching the database server that the other tests share.

use std::{net::SocketAddr, sync::Arc};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct PgProxy {
    pub addr: SocketAddr,
    up: Arc<watch::Sender<bool>>,
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
        let accept = tokio::spawn({
            let state = state.clone();
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if !*state.borrow() {
                        // Down: the connection is closed before PostgreSQL says anything.
                        drop(inbound);
                        continue;
                    }
                    let mut down = state.subscribe();
                    let target = target.clone();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(&target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = down.wait_for(|up| !*up) => {}
                        }
                    });
                }
            }
        });
        Self {
            addr,
            up: state,
            accept,
        }
    }

    /// Refuses new connections and cuts every open one.
    pub fn down(&self) {
        self.up.send_replace(false);
    }

    pub fn up(&self) {
        self.up.send_replace(true);
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
