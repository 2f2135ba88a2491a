//! Write-ahead semantics: when PostgreSQL stops answering, an append fails with
//! `LedgerError::Unavailable` within the configured bound, and nothing half-written is
//! left behind. A small TCP proxy sits between the pool and the server so the test can
//! black-hole and then cut the connection mid-run.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_audit::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Forward,
    BlackHole,
    Dead,
}

/// Forwards 127.0.0.1:<port> to `upstream` until told otherwise.
async fn proxy(upstream: String) -> (u16, watch::Sender<Mode>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = watch::channel(Mode::Forward);
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            if *rx.borrow() != Mode::Forward {
                drop(client);
                continue;
            }
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, rx.clone()));
            tokio::spawn(pipe(sr, cw, rx.clone()));
        }
    });
    (port, tx)
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = from.read(&mut buf) => {
                let Ok(n) = n else { return };
                if n == 0 { return; }
                // Hold bytes while black-holed; drop the connection when dead.
                loop {
                    let m = *mode.borrow();
                    match m {
                        Mode::Forward => break,
                        Mode::Dead => return,
                        Mode::BlackHole => { if mode.changed().await.is_err() { return; } }
                    }
                }
                if to.write_all(&buf[..n]).await.is_err() { return; }
            }
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == Mode::Dead { return; }
            }
        }
    }
}

fn upstream() -> String {
    let admin = admin_url();
    let after_at = admin.rsplit_once('@').map(|(_, r)| r).unwrap_or(&admin);
    after_at
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:5432")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_fails_closed_within_the_bound_and_leaves_nothing_half_written() {
    let db = create_db().await;
    let (port, mode) = proxy(upstream()).await;
    let direct = db_url(&db);
    let proxied = direct.replacen(&upstream(), &format!("127.0.0.1:{port}"), 1);
    assert_ne!(direct, proxied);
    let bound = Duration::from_millis(1500);
    let options = LedgerOptions {
        operation_timeout: bound,
        max_connections: 2,
        migrate: true,
    };
    let ledger: Arc<dyn Ledger> =
        Arc::new(PgLedger::connect(&proxied, options.clone()).await.unwrap());
    let t = tenant("acme");
    let run = ledger.start_run(new_run("acme", "alice")).await.unwrap();
    for i in 0..3 {
        ledger
            .append(&t, run.id, user_msg(&format!("m{i}")))
            .await
            .unwrap();
    }

    // The network goes silent: the next append must give up on its own, typed.
    mode.send(Mode::BlackHole).unwrap();
    let start = Instant::now();
    let e = ledger
        .append(&t, run.id, user_msg("lost"))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(e.is_unavailable(), "{e}");
    assert!(took >= bound - Duration::from_millis(50), "{took:?}");
    assert!(took < bound + Duration::from_secs(1), "{took:?}");

    // Terminal steps (the transactional, sealing path) fail the same way.
    let start = Instant::now();
    let e = ledger
        .append(&t, run.id, final_answer("lost"))
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(start.elapsed() < bound + Duration::from_secs(1));

    // Then the connections are cut: still typed, still bounded.
    mode.send(Mode::Dead).unwrap();
    let start = Instant::now();
    let e = ledger
        .append(&t, run.id, user_msg("lost too"))
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(start.elapsed() < bound + Duration::from_secs(1));
    drop(ledger);

    // Recovery: the database holds exactly what was committed, nothing else, and the run
    // carries on where it was.
    let ledger = PgLedger::connect(&direct, options).await.unwrap();
    let trail = ledger.trail(&t, run.id).await.unwrap();
    assert_eq!(trail.len(), 3);
    assert!(ledger.verify(None, None, None).await.unwrap().is_ok());
    let next = ledger
        .append(&t, run.id, final_answer("done"))
        .await
        .unwrap();
    assert_eq!(next.seq, 3);
    let r = ledger.verify(None, None, None).await.unwrap();
    assert!(r.is_ok(), "{r}");
    assert_eq!((r.counts.steps, r.counts.seals), (4, 2));
    drop(ledger);
    drop_db(&db).await;
}

#[tokio::test]
async fn unreachable_server_is_unavailable_not_a_hang() {
    // Nothing listens on this port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let start = Instant::now();
    let e = match PgLedger::connect(
        &format!("postgres://postgres@127.0.0.1:{port}/x"),
        LedgerOptions {
            operation_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await
    {
        Err(e) => e,
        Ok(_) => panic!("connected to nothing"),
    };
    assert!(e.is_unavailable(), "{e}");
    assert!(start.elapsed() < Duration::from_secs(3));
}

/// SQLite fails closed the same way: another process holds the database's write lock (as a
/// stuck writer or a backup tool would), appends give up within the bound with
/// `Unavailable`, and once the lock is released the ledger holds exactly what was
/// committed and the run carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_append_fails_closed_when_the_database_is_locked() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
    let bound = Duration::from_millis(800);
    let options = LedgerOptions {
        operation_timeout: bound,
        max_connections: 4,
        migrate: true,
    };
    let ledger: Arc<dyn Ledger> =
        Arc::new(SqliteLedger::connect(&url, options.clone()).await.unwrap());
    let t = tenant("acme");
    let run = ledger.start_run(new_run("acme", "alice")).await.unwrap();
    for i in 0..3 {
        ledger
            .append(&t, run.id, user_msg(&format!("m{i}")))
            .await
            .unwrap();
    }

    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();

    for step in [user_msg("lost"), final_answer("lost")] {
        let start = Instant::now();
        let e = ledger.append(&t, run.id, step).await.unwrap_err();
        let took = start.elapsed();
        assert!(e.is_unavailable(), "{e}");
        assert!(took >= bound - Duration::from_millis(100), "{took:?}");
        assert!(took < bound + Duration::from_secs(1), "{took:?}");
    }
    let start = Instant::now();
    let e = ledger.start_run(new_run("acme", "bob")).await.unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(start.elapsed() < bound + Duration::from_secs(1));

    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    drop(other);
    let trail = ledger.trail(&t, run.id).await.unwrap();
    assert_eq!(trail.len(), 3);
    let r = ledger.verify(None, None, None).await.unwrap();
    assert!(r.is_ok(), "{r}");
    assert_eq!(
        (r.counts.runs, r.counts.seals),
        (1, 1),
        "nothing of bob's run"
    );
    let next = ledger
        .append(&t, run.id, final_answer("done"))
        .await
        .unwrap();
    assert_eq!(next.seq, 3);
    let r = ledger.verify(None, None, None).await.unwrap();
    assert!(r.is_ok(), "{r}");
    assert_eq!((r.counts.steps, r.counts.seals), (4, 2));
}
