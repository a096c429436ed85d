//! The metrics and health listener: HTTP/1 with a header-read timeout that also
//! closes idle keep-alive connections, a cap on a connection's age, and a cap on
//! concurrent connections, so that held-open sockets cannot use up the daemon's
//! file descriptors (which the renewal pass needs).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// How the listener bounds its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request's headers must arrive within this; the same timer runs while a
    /// keep-alive connection waits for its next request, so it is the idle timeout.
    pub header_read_timeout: Duration,
    /// A connection is asked to close after this long, whatever it does.
    pub max_connection_age: Duration,
    /// Connections served at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connection_age: Duration::from_secs(60),
            // Prometheus keeps one connection per scrape target; health probes a few.
            max_connections: 64,
        }
    }
}

/// After a connection was asked to close, how long its response may still take.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How often at most the listener logs that it turned connections away.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(60);

/// A warning when `addr` is reachable from other hosts, for the start-up log.
pub fn exposure_warning(addr: SocketAddr) -> Option<String> {
    (!addr.ip().to_canonical().is_loopback()).then(|| {
        format!(
            "metrics.listen {addr} is not a loopback address: /metrics, /healthz and /readyz answer anyone who can reach it (certificate names and expiry); keep it on 127.0.0.1 or firewall it"
        )
    })
}

/// Serves `app` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, app: axum::Router, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut refused: u64 = 0;
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE and the like: wait for descriptors to come back.
                warn!(error = %e, "metrics listener cannot accept a connection");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            refused += 1;
            if last_refusal_log.is_none_or(|t| t.elapsed() >= REFUSED_LOG_EVERY) {
                warn!(
                    %peer,
                    refused,
                    max_connections = limits.max_connections,
                    "metrics listener at its connection limit; closing new connections"
                );
                last_refusal_log = Some(Instant::now());
                refused = 0;
            }
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, app, limits).await;
            drop(slot);
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    limits: Limits,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = tokio::time::sleep(limits.max_connection_age) => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        // Timeouts and clients that go away are routine; nothing to act on.
        debug!(%peer, error = %e, "metrics connection ended");
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    async fn start(limits: Limits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route("/metrics", get(|| async { "cas_renewd_up 1\n" }));
        tokio::spawn(serve(listener, app, limits));
        addr
    }

    fn short() -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(800),
            max_connection_age: Duration::from_secs(30),
            max_connections: 4,
        }
    }

    /// Reads until the server closes the connection; `None` if it stays open for `within`.
    async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => return Some(got),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
    }

    async fn get_metrics(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let got = closed_within(&mut s, Duration::from_secs(5))
            .await
            .expect("answered and closed");
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn silent_connections_beyond_the_cap_do_not_lock_the_listener_out() {
        let addr = start(short()).await;
        let mut held = Vec::new();
        for _ in 0..12 {
            held.push(TcpStream::connect(addr).await.expect("connect"));
        }
        // Every silent connection is closed by the server: over the cap at once,
        // the others when their header timeout runs out.
        for (i, s) in held.iter_mut().enumerate() {
            assert!(
                closed_within(s, Duration::from_secs(5)).await.is_some(),
                "silent connection {i} is still open"
            );
        }
        let answer = get_metrics(addr).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("cas_renewd_up 1"), "{answer}");
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_at_once() {
        let addr = start(Limits {
            header_read_timeout: Duration::from_secs(60),
            max_connection_age: Duration::from_secs(60),
            max_connections: 2,
        })
        .await;
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(TcpStream::connect(addr).await.expect("connect"));
        }
        let mut closed = 0;
        for s in conns.iter_mut() {
            if closed_within(s, Duration::from_secs(2)).await.is_some() {
                closed += 1;
            }
        }
        assert_eq!(
            closed, 2,
            "the two connections over the cap, and only they, are closed"
        );
        // Once the held connections go away, their slots serve new clients.
        drop(conns);
        let mut answer = String::new();
        for _ in 0..50 {
            answer = get_metrics(addr).await;
            if answer.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_its_request() {
        let addr = start(short()).await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let got = closed_within(&mut s, Duration::from_secs(5))
            .await
            .expect("the idle connection is closed");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }

    #[tokio::test]
    async fn a_connection_is_closed_at_its_maximum_age() {
        let addr = start(Limits {
            header_read_timeout: Duration::from_secs(30),
            max_connection_age: Duration::from_millis(500),
            max_connections: 4,
        })
        .await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        assert!(
            closed_within(&mut s, Duration::from_secs(10))
                .await
                .is_some()
        );
    }

    #[test]
    fn only_non_loopback_addresses_are_warned_about() {
        for quiet in [
            "127.0.0.1:9797",
            "127.0.0.2:9797",
            "[::1]:9797",
            "[::ffff:127.0.0.1]:9797",
        ] {
            let addr: SocketAddr = quiet.parse().expect("addr");
            assert_eq!(exposure_warning(addr), None, "{quiet}");
        }
        for loud in ["0.0.0.0:9797", "[::]:9797", "192.0.2.7:9797"] {
            let addr: SocketAddr = loud.parse().expect("addr");
            let w = exposure_warning(addr).expect("warned");
            assert!(w.contains("not a loopback address"), "{w}");
        }
    }
}
