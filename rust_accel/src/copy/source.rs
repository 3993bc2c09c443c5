//! The network side: a thread that connects, runs the setup statements and the COPY, and
//! hands the raw COPY bytes on in large buffers, so the next buffer is read from the
//! socket while the previous one is decoded.

use std::fmt::Write as _;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use futures_util::future::{select, Either, FutureExt};
use futures_util::StreamExt;
use rustls::ClientConfig;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::errors::Error;

/// Bytes gathered before a buffer is handed to the decoder.
const CHUNK_BYTES: usize = 1 << 20;
/// Buffers read ahead of the decoder.
const QUEUE_DEPTH: usize = 8;
/// A partly filled buffer goes to the decoder after the socket was quiet this long.
const IDLE_FLUSH: Duration = Duration::from_millis(20);
/// How often a source with a cancel flag looks at it while waiting for data.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// What the reader thread sends.
pub enum Chunk {
    /// COPY bytes, ending on a `CopyData` message boundary.
    Data(Vec<u8>),
    /// The COPY completed.
    End,
    Failed(Error),
}

/// The receiving end of a running COPY.
pub struct Source {
    rx: Receiver<Chunk>,
    recycle: Sender<Vec<u8>>,
    /// Dropped with the source: the reader thread then cancels the query and closes the
    /// connection, even while the server is still computing rows.
    _stop: oneshot::Sender<()>,
    /// Set by another thread to end a wait in `recv` (then the owner drops the source).
    cancel: Option<Arc<AtomicBool>>,
}

impl Source {
    /// Connect with `dsn` (a libpq key=value string or a postgres:// URI), run each of
    /// `setup`, then start `copy` (a `COPY ... TO STDOUT (FORMAT binary)`). Returns once
    /// the COPY has started, so connection and SQL errors surface here.
    /// Over TLS when `tls` is given (the DSN's `sslmode` must then be `require`); `recv`
    /// also returns (with an error) soon after `cancel` is set.
    pub fn open(
        dsn: &str,
        setup: Vec<String>,
        copy: String,
        cancel: Option<Arc<AtomicBool>>,
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<Source, Error> {
        let config: Config = dsn
            .parse()
            .map_err(|e| Error::Connect(format!("invalid connection string: {}", chain(&e))))?;
        let secret = config
            .get_password()
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let (status_tx, status_rx) = mpsc::sync_channel(1);
        let (tx, rx) = mpsc::sync_channel(QUEUE_DEPTH);
        let (recycle, recycled) = mpsc::channel();
        let (stop, stopped) = oneshot::channel();
        let io = Io {
            status: status_tx,
            tx,
            recycled,
            stopped,
        };
        thread::Builder::new()
            .name("dativo-copy".into())
            .spawn(move || run(&config, &setup, &copy, io, tls))
            .map_err(|e| Error::Server(format!("could not start the COPY thread: {e}")))?;
        match status_rx.recv() {
            Ok(Ok(())) => Ok(Source {
                rx,
                recycle,
                _stop: stop,
                cancel,
            }),
            Ok(Err(e)) => Err(scrub(e, &secret)),
            Err(_) => Err(Error::Server(
                "the COPY thread stopped before the COPY began".into(),
            )),
        }
    }

    /// The next buffer (blocks until the reader thread has one).
    pub fn recv(&self) -> Chunk {
        let stopped =
            || Chunk::Failed(Error::Server("the COPY thread stopped unexpectedly".into()));
        let Some(cancel) = &self.cancel else {
            return self.rx.recv().unwrap_or_else(|_| stopped());
        };
        loop {
            if cancel.load(Ordering::SeqCst) {
                return Chunk::Failed(Error::Server("the read was cancelled".into()));
            }
            match self.rx.recv_timeout(CANCEL_POLL) {
                Ok(chunk) => return chunk,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return stopped(),
            }
        }
    }

    /// Give a consumed buffer back for reuse.
    pub fn recycle(&self, mut buf: Vec<u8>) {
        buf.clear();
        let _ = self.recycle.send(buf);
    }
}

/// The reader thread's ends of the channels.
struct Io {
    status: SyncSender<Result<(), Error>>,
    tx: SyncSender<Chunk>,
    recycled: Receiver<Vec<u8>>,
    stopped: oneshot::Receiver<()>,
}

fn run(config: &Config, setup: &[String], copy: &str, io: Io, tls: Option<Arc<ClientConfig>>) {
    let Io {
        status,
        tx,
        recycled,
        mut stopped,
    } = io;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = status.send(Err(Error::Server(format!(
                "could not start the runtime: {e}"
            ))));
            return;
        }
    };
    runtime.block_on(async {
        let connected = match &tls {
            None => config.connect(NoTls).await.map(|(client, connection)| {
                tokio::spawn(connection);
                client
            }),
            Some(tls) => config
                .connect(MakeRustlsConnect::new(ClientConfig::clone(tls)))
                .await
                .map(|(client, connection)| {
                    tokio::spawn(connection);
                    client
                }),
        };
        let client = match connected {
            Ok(client) => client,
            Err(e) => {
                let _ = status.send(Err(Error::Connect(describe(&e))));
                return;
            }
        };
        for statement in setup {
            if let Err(e) = client.batch_execute(statement).await {
                let _ = status.send(Err(Error::Server(describe(&e))));
                return;
            }
        }
        let stream = match client.copy_out(copy).await {
            Ok(stream) => stream,
            Err(e) => {
                let _ = status.send(Err(Error::Server(describe(&e))));
                return;
            }
        };
        if status.send(Ok(())).is_err() {
            return;
        }
        let mut stream = pin!(stream);
        let mut chunk = Vec::with_capacity(CHUNK_BYTES);
        // Blocking in `send` pauses the connection too: back-pressure up to the server.
        let hand_over = |chunk: &mut Vec<u8>| -> bool {
            let next = recycled
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK_BYTES));
            tx.send(Chunk::Data(std::mem::replace(chunk, next))).is_ok()
        };
        loop {
            // A message already received is taken at once. Otherwise, if nothing comes for
            // a moment (a slow query), what was gathered goes to the decoder first.
            let mut ready = stream.next().now_or_never();
            if ready.is_none() && !chunk.is_empty() {
                match timeout(IDLE_FLUSH, select(stream.next(), &mut stopped)).await {
                    Ok(Either::Left((item, _))) => ready = Some(item),
                    Ok(Either::Right(_)) => return cancel(&client, tls.as_deref()).await,
                    Err(_) if !hand_over(&mut chunk) => {
                        return cancel(&client, tls.as_deref()).await
                    }
                    Err(_) => {}
                }
            }
            let item = match ready {
                Some(item) => item,
                None => match select(stream.next(), &mut stopped).await {
                    Either::Left((item, _)) => item,
                    Either::Right(_) => return cancel(&client, tls.as_deref()).await,
                },
            };
            let message = match item {
                None => break,
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    let _ = tx.send(Chunk::Failed(Error::Server(describe(&e))));
                    return;
                }
            };
            if !chunk.is_empty()
                && chunk.len() + message.len() > CHUNK_BYTES
                && !hand_over(&mut chunk)
            {
                return cancel(&client, tls.as_deref()).await;
            }
            chunk.extend_from_slice(&message);
        }
        if !chunk.is_empty() && tx.send(Chunk::Data(chunk)).is_err() {
            return;
        }
        let _ = tx.send(Chunk::End);
    });
}

/// The reader is gone: stop the query rather than let it run on (closing the connection
/// alone goes unnoticed by a backend that is computing, not sending).
async fn cancel(client: &Client, tls: Option<&ClientConfig>) {
    let token = client.cancel_token();
    let _ = match tls {
        None => token.cancel_query(NoTls).await,
        Some(tls) => {
            token
                .cancel_query(MakeRustlsConnect::new(tls.clone()))
                .await
        }
    };
}

/// A server error as psql shows it (severity, message, detail, hint); any other error
/// with its causes.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(detail) = db.detail() {
                let _ = write!(text, " (DETAIL: {detail})");
            }
            if let Some(hint) = db.hint() {
                let _ = write!(text, " (HINT: {hint})");
            }
            text
        }
        None => chain(e),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Never let the password reach a message (the client library does not put it in any;
/// this guards against one that echoes it). Short passwords are skipped: masking every
/// "a" in a message would hide it without protecting anything.
fn scrub(e: Error, secret: &[u8]) -> Error {
    let Ok(secret) = std::str::from_utf8(secret) else {
        return e;
    };
    if secret.len() < 4 {
        return e;
    }
    let clean = |m: String| m.replace(secret, "********");
    match e {
        Error::Connect(m) => Error::Connect(clean(m)),
        Error::Server(m) => Error::Server(clean(m)),
        Error::Decode(m) => Error::Decode(clean(m)),
        Error::Usage(m) => Error::Usage(clean(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        let e = scrub(Error::Connect("login s3cret! failed".into()), b"s3cret!");
        assert_eq!(e, Error::Connect("login ******** failed".into()));
    }

    #[test]
    fn a_bad_connection_string_is_a_connect_error_without_the_password() {
        let Err(Error::Connect(m)) = Source::open(
            "host=/nowhere password=hunter22 port=x",
            vec![],
            String::new(),
            None,
            None,
        ) else {
            panic!("expected a connect error")
        };
        assert!(
            m.contains("invalid connection string") && !m.contains("hunter22"),
            "{m}"
        );
    }

    #[test]
    fn an_unreachable_server_is_a_connect_error() {
        let dir = std::env::temp_dir().join("dativo-no-server-here");
        let dsn = format!(
            "host={} user=u password=hunter22 connect_timeout=2",
            dir.display()
        );
        let Err(Error::Connect(m)) = Source::open(&dsn, vec![], String::new(), None, None) else {
            panic!("expected a connect error")
        };
        assert!(
            m.contains("error connecting to server") && !m.contains("hunter22"),
            "{m}"
        );
    }
}
