//! PostgreSQL going away and coming back, simulated by a TCP proxy in front of the test
//! database (the real server is shared, so it is not stopped): calls fail fast with
//! `StoreError::Backend`, never hang, and the same store works again once the database is
//! back.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{DropSchema, chain, random_schema};
use mcp_auth_server::store::suite::{NOW, user};
use mcp_auth_server::store::{Store, StoreError};
use mcp_auth_store_postgres::{PostgresOptions, PostgresStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A proxy to the test database that can be cut (connections closed, new ones refused) or
/// turned into a black hole (connections stay open, nothing gets through).
struct Proxy {
    addr: SocketAddr,
    upstream: String,
    silent: Arc<AtomicBool>,
    tasks: JoinSet<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut proxy = Self {
            addr,
            upstream,
            silent: Arc::new(AtomicBool::new(false)),
            tasks: JoinSet::new(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let (upstream, silent) = (self.upstream.clone(), self.silent.clone());
        self.tasks.spawn(async move {
            // Connection tasks live in this set, so aborting the accept loop closes them.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, silent) = (upstream.clone(), silent.clone());
                connections.spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pump(client_read, server_write, silent.clone()),
                        pump(server_read, client_write, silent),
                    );
                });
            }
        });
    }

    /// Closes every connection and the listening socket: connections are refused.
    async fn cut(&mut self) {
        self.tasks.shutdown().await;
    }

    /// Listens again on the same address and forwards again.
    async fn restore(&mut self) {
        self.silent.store(false, Ordering::SeqCst);
        if self.tasks.is_empty() {
            let listener = TcpListener::bind(self.addr).await.unwrap();
            self.serve(listener);
        }
    }

    /// Keeps connections open but forwards nothing: a server that stopped answering.
    fn silence(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }
}

/// Copies bytes one way, holding them back while `silent`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<AtomicBool>,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        while silent.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while silent.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn expect_backend_error<T: std::fmt::Debug>(result: Result<T, StoreError>, started: Instant) {
    let elapsed = started.elapsed();
    match result {
        Err(e @ StoreError::Backend(_)) => {
            assert!(!chain(&e).contains("mcp_auth:mcp_auth"), "{}", chain(&e));
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    // Bounded by the pool wait plus the statement deadline (1 s each here), with slack for
    // a loaded machine.
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
}

/// Retries `get_user` until it answers, for at most a few seconds.
async fn until_back(store: &PostgresStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.get_user("t1", "alice").await {
            Ok(found) => {
                assert_eq!(found, Some(user("t1", "alice")));
                return;
            }
            Err(e) => assert!(Instant::now() < deadline, "not back: {}", chain(&e)),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_fails_fast_and_the_pool_recovers() {
    let url = common::url();
    let (credentials, rest) = url.split_once('@').unwrap();
    let (host_port, database) = rest.split_once('/').unwrap();
    let mut proxy = Proxy::start(host_port.to_owned()).await;
    let schema = random_schema();
    let _guard = DropSchema(schema.clone());
    let options = PostgresOptions::new(format!("{credentials}@{}/{database}", proxy.addr))
        .pool_size(2)
        .schema(&schema)
        .connect_timeout(Duration::from_secs(1))
        .statement_timeout(Duration::from_secs(1));
    let store = PostgresStore::connect_with(options).await.unwrap();
    store.put_user(&user("t1", "alice")).await.unwrap();

    // The database goes away: open connections close, new ones are refused.
    proxy.cut().await;
    for _ in 0..3 {
        let started = Instant::now();
        expect_backend_error(store.get_user("t1", "alice").await, started);
    }
    // It comes back: the same store works again, no restart.
    proxy.restore().await;
    until_back(&store).await;

    // The database stops answering but keeps the connections open.
    proxy.silence();
    for _ in 0..3 {
        let started = Instant::now();
        expect_backend_error(store.take_pending("t1", "p", NOW).await, started);
    }
    proxy.restore().await;
    until_back(&store).await;
}
