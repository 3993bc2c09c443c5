//! A logical replication client: `START_REPLICATION SLOT ... LOGICAL` over a walsender
//! connection (`replication=database`), handing on the slot's pgoutput messages.
//!
//! The connection is a blocking socket (TCP or a unix socket), spoken with
//! `postgres-protocol`'s message codecs: tokio-postgres has no replication mode and no
//! `CopyBoth`. Inside `CopyBoth` the server sends `XLogData` (`w`) and keepalives (`k`); the
//! client answers with standby status updates (`r`).
//!
//! Over TLS (`Request::tls`, the rustls configuration the COPY connections use, with the
//! same `sslmode` meanings, see `crate::copy::client_config`) the TCP socket first asks
//! for it (`SSLRequest`), completes the handshake, and then carries the same protocol
//! inside a `rustls::StreamOwned`. A server that declines TLS is an error, never a
//! fallback to plain text.
//!
//! Acknowledging is not this client's job. Every status update reports, as written,
//! flushed and applied, the LSN the caller says the slot is already confirmed at (what
//! a destination made durable), never the position read: a walsender confirms a logical
//! slot up to the flush position a status update reports, so reporting the read
//! position would let the server drop WAL the destination has not committed.
//!
//! The read ends at `upto` (the WAL end seen when the read began) the way
//! `pg_logical_slot_peek_binary_changes(slot, upto, ...)` ends: transactions whose commit
//! record starts before `upto` are delivered, later ones are not.

pub mod changes;

use std::io::{self, Read, Write};
use std::net::TcpStream;
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tokio_postgres::config::{Config, Host, SslMode};

use crate::copy::Error;

/// The socket waits this long for data before the client asks the server where it is.
const QUIET: Duration = Duration::from_millis(100);
/// Bytes asked of the socket at each read.
const READ_BYTES: usize = 256 << 10;
/// A status update goes out at least this often (well inside `wal_sender_timeout`).
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

enum Socket {
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    #[cfg(unix)]
    Unix(UnixStream),
}

impl Socket {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_read_timeout(timeout),
            Socket::Tls(s) => s.sock.set_read_timeout(timeout),
            #[cfg(unix)]
            Socket::Unix(s) => s.set_read_timeout(timeout),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Tls(s) => s.read(buf),
            #[cfg(unix)]
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Tls(s) => s.write(buf),
            #[cfg(unix)]
            Socket::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.flush(),
            Socket::Tls(s) => s.flush(),
            #[cfg(unix)]
            Socket::Unix(s) => s.flush(),
        }
    }
}

/// A backend message as the client tells them apart.
enum Frame {
    CopyData(Bytes),
    CopyBoth,
    Other(Message),
}

/// What a replication read is asked to do.
pub struct Request {
    /// A libpq `key=value` string or URI (`sslmode=require` only with `tls`).
    pub dsn: String,
    /// TLS for the connection (`crate::copy::client_config`); None: plain TCP.
    pub tls: Option<Arc<ClientConfig>>,
    pub slot: String,
    pub publication: String,
    /// The LSN to stream from (transactions committed before it are skipped).
    pub start: u64,
    /// The WAL end seen when the read began: the read ends there.
    pub upto: u64,
    /// The slot's confirmed position: the only LSN status updates report.
    pub confirmed: u64,
}

/// A running replication read.
pub struct Replication {
    socket: Socket,
    buf: BytesMut,
    scratch: Box<[u8]>,
    out: BytesMut,
    upto: u64,
    confirmed: u64,
    in_txn: bool,
    done: bool,
    last_status: Instant,
    asked: bool,
    /// The highest LSN a status update reported (0 before the first).
    pub reported: u64,
    /// Status updates sent.
    pub updates: u64,
    /// The highest WAL position the server said it had sent (`XLogData` or keepalive).
    pub server_lsn: u64,
}

fn io_err(e: &io::Error) -> Error {
    Error::Server(format!("replication connection: {e}"))
}

fn fields_text(mut fields: ErrorFields<'_>) -> String {
    use fallible_iterator::FallibleIterator;
    let mut severity = String::new();
    let mut message = String::new();
    let mut code = String::new();
    while let Ok(Some(field)) = fields.next() {
        match field.type_() {
            b'S' => severity = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            b'M' => message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            b'C' => code = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            _ => {}
        }
    }
    format!("{severity}: {message} (SQLSTATE {code})")
}

fn connect(config: &Config, tls: Option<&Arc<ClientConfig>>) -> Result<Socket, Error> {
    if tls.is_none() && config.get_ssl_mode() == SslMode::Require {
        return Err(Error::Usage(
            "the connection string asks for sslmode=require but no TLS settings were given".into(),
        ));
    }
    let hosts = config.get_hosts();
    let ports = config.get_ports();
    let mut last = String::from("no host to connect to");
    for (i, host) in hosts.iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let result = match host {
            Host::Tcp(name) => match TcpStream::connect((name.as_str(), port)) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return match tls {
                        Some(tls) => start_tls(s, name, tls),
                        None => Ok(Socket::Tcp(s)),
                    };
                }
                Err(e) => Err(e),
            },
            #[cfg(unix)]
            Host::Unix(dir) => {
                if tls.is_some() {
                    last = format!("{host:?}: PostgreSQL has no TLS over a unix socket");
                    continue;
                }
                UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).map(Socket::Unix)
            }
        };
        match result {
            Ok(socket) => return Ok(socket),
            Err(e) => last = format!("{host:?}:{port}: {e}"),
        }
    }
    Err(Error::Connect(format!("cannot connect: {last}")))
}

/// Ask the server for TLS on `tcp` (`SSLRequest`) and complete the handshake with
/// `tls`, checking the certificate against `host` as `tls`'s verifier does.
fn start_tls(mut tcp: TcpStream, host: &str, tls: &Arc<ClientConfig>) -> Result<Socket, Error> {
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).map_err(|e| io_err(&e))?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).map_err(|e| io_err(&e))?;
    match answer[0] {
        b'S' => {}
        b'N' => {
            return Err(Error::Connect(format!(
                "{host}: the server does not accept TLS connections (ssl = off)"
            )))
        }
        other => {
            return Err(Error::Connect(format!(
                "{host}: unexpected answer {:?} to the TLS request",
                char::from(other)
            )))
        }
    }
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| Error::Connect(format!("TLS: host name {host:?}: {e}")))?;
    let mut conn = ClientConnection::new(Arc::clone(tls), name)
        .map_err(|e| Error::Connect(format!("TLS setup failed: {e}")))?;
    // The handshake here, so a refused certificate is a connection error naming the host
    // (rather than a failed write later, during the login).
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| Error::Connect(format!("TLS handshake with {host}: {e}")))?;
    }
    Ok(Socket::Tls(Box::new(StreamOwned::new(conn, tcp))))
}

impl Replication {
    /// Connect, log in as a walsender and start streaming the slot.
    pub fn start(request: &Request) -> Result<Replication, Error> {
        let config: Config = request
            .dsn
            .parse()
            .map_err(|e| Error::Connect(format!("invalid connection string: {e}")))?;
        let socket = connect(&config, request.tls.as_ref())?;
        let mut this = Replication {
            socket,
            buf: BytesMut::with_capacity(1 << 20),
            scratch: vec![0; READ_BYTES].into_boxed_slice(),
            out: BytesMut::new(),
            upto: request.upto,
            confirmed: request.confirmed,
            in_txn: false,
            done: false,
            last_status: Instant::now(),
            asked: false,
            reported: 0,
            updates: 0,
            server_lsn: 0,
        };
        this.login(&config)?;
        let command = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {})",
            quote_ident(&request.slot),
            format_lsn(request.start),
            quote_literal(&quote_ident(&request.publication)),
        );
        frontend::query(&command, &mut this.out).map_err(|e| io_err(&e))?;
        this.send()?;
        loop {
            match this.message()? {
                Frame::CopyBoth => break,
                Frame::Other(Message::ErrorResponse(body)) => {
                    return Err(Error::Server(format!(
                        "START_REPLICATION: {}",
                        fields_text(body.fields())
                    )))
                }
                _ => {}
            }
        }
        this.socket
            .set_read_timeout(Some(QUIET))
            .map_err(|e| io_err(&e))?;
        Ok(this)
    }

    fn login(&mut self, config: &Config) -> Result<(), Error> {
        let user = config
            .get_user()
            .ok_or_else(|| Error::Connect("the connection string names no user".into()))?
            .to_string();
        let dbname = config.get_dbname().unwrap_or(&user).to_string();
        let mut params = vec![
            ("user", user.as_str()),
            ("database", dbname.as_str()),
            ("replication", "database"),
            ("application_name", "dativo_cdc"),
        ];
        if let Some(options) = config.get_options() {
            params.push(("options", options));
        }
        frontend::startup_message(params, &mut self.out).map_err(|e| io_err(&e))?;
        self.send()?;
        let password = config.get_password().map(<[u8]>::to_vec);
        let need = || Error::Connect("the server asks for a password and none was given".into());
        let mut scram: Option<ScramSha256> = None;
        loop {
            let Frame::Other(message) = self.message()? else {
                return Err(Error::Connect("unexpected message during login".into()));
            };
            match message {
                Message::AuthenticationOk
                | Message::ParameterStatus(_)
                | Message::BackendKeyData(_)
                | Message::NoticeResponse(_) => {}
                Message::AuthenticationCleartextPassword => {
                    let pw = password.as_deref().ok_or_else(need)?;
                    frontend::password_message(pw, &mut self.out).map_err(|e| io_err(&e))?;
                    self.send()?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let pw = password.as_deref().ok_or_else(need)?;
                    let hash = md5_hash(user.as_bytes(), pw, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.out)
                        .map_err(|e| io_err(&e))?;
                    self.send()?;
                }
                Message::AuthenticationSasl(_) => {
                    let pw = password.as_deref().ok_or_else(need)?;
                    let state = ScramSha256::new(pw, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, state.message(), &mut self.out)
                        .map_err(|e| io_err(&e))?;
                    self.send()?;
                    scram = Some(state);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let state = scram
                        .as_mut()
                        .ok_or_else(|| Error::Connect("unexpected SASL message".into()))?;
                    state
                        .update(body.data())
                        .map_err(|e| Error::Connect(format!("SCRAM: {e}")))?;
                    frontend::sasl_response(state.message(), &mut self.out)
                        .map_err(|e| io_err(&e))?;
                    self.send()?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let state = scram
                        .as_mut()
                        .ok_or_else(|| Error::Connect("unexpected SASL message".into()))?;
                    state
                        .finish(body.data())
                        .map_err(|e| Error::Connect(format!("SCRAM: {e}")))?;
                }
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => {
                    return Err(Error::Connect(fields_text(body.fields())))
                }
                _ => {
                    return Err(Error::Connect(
                        "the server asked for an authentication method the replication \
                         client does not implement (trust, password, md5 and SCRAM-SHA-256 are)"
                            .into(),
                    ))
                }
            }
        }
    }

    fn send(&mut self) -> Result<(), Error> {
        let out = self.out.split();
        self.socket.write_all(&out).map_err(|e| io_err(&e))
    }

    /// The next backend message, blocking (timeouts retried).
    fn message(&mut self) -> Result<Frame, Error> {
        loop {
            if let Some(m) = self.try_message()? {
                return Ok(m);
            }
        }
    }

    /// A whole message at the head of the buffer, if there is one. `CopyData` and
    /// `CopyBothResponse` are framed here (`postgres-protocol` has no `CopyBoth`), the rest
    /// by `Message::parse`.
    fn frame(&mut self) -> Result<Option<Frame>, Error> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let tag = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let total = len as usize + 1;
        if len < 4 || self.buf.len() < total {
            return Ok(None);
        }
        match tag {
            b'd' => {
                let mut frame = self.buf.split_to(total).freeze();
                Ok(Some(Frame::CopyData(frame.split_off(5))))
            }
            b'W' => {
                let _ = self.buf.split_to(total);
                Ok(Some(Frame::CopyBoth))
            }
            _ => Ok(Message::parse(&mut self.buf)
                .map_err(|e| io_err(&e))?
                .map(Frame::Other)),
        }
    }

    /// The next backend message, or None after a quiet `QUIET` on a timed socket.
    fn try_message(&mut self) -> Result<Option<Frame>, Error> {
        loop {
            if let Some(m) = self.frame()? {
                return Ok(Some(m));
            }
            // Into a fixed scratch buffer, then appended: only the bytes read are
            // copied (reading into the message buffer's spare capacity would need it
            // zeroed first, its whole length at each read).
            match self.socket.read(&mut self.scratch) {
                Ok(0) => {
                    return Err(Error::Server(
                        "the server closed the replication connection".into(),
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&self.scratch[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(&e)),
            }
        }
    }

    /// A standby status update reporting `confirmed` (see the module docs).
    fn status(&mut self, reply: bool) -> Result<(), Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64)
            - PG_EPOCH_US;
        let mut body = Vec::with_capacity(34);
        body.push(b'r');
        for _ in 0..3 {
            body.extend_from_slice(&self.confirmed.to_be_bytes());
        }
        body.extend_from_slice(&now.to_be_bytes());
        body.push(u8::from(reply));
        self.out.extend_from_slice(b"d");
        self.out
            .extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        self.out.extend_from_slice(&body);
        self.send()?;
        self.reported = self.reported.max(self.confirmed);
        self.updates += 1;
        self.last_status = Instant::now();
        Ok(())
    }

    /// Up to `max_messages` pgoutput messages (each with the WAL position of its
    /// `XLogData`); an empty list once the read reached `upto`. Returns early with what it
    /// has when the server goes quiet.
    pub fn next_chunk(&mut self, max_messages: usize) -> Result<Vec<(u64, Bytes)>, Error> {
        let mut chunk = Vec::new();
        while !self.done && chunk.len() < max_messages {
            if self.last_status.elapsed() >= STATUS_EVERY {
                self.status(false)?;
            }
            let Some(message) = self.try_message()? else {
                if !chunk.is_empty() {
                    return Ok(chunk);
                }
                if !self.asked {
                    // Quiet: ask where the server is (its reply is a keepalive).
                    self.status(true)?;
                    self.asked = true;
                }
                continue;
            };
            match message {
                Frame::CopyData(data) => {
                    if let Some(item) = self.copy_data(data)? {
                        chunk.push(item);
                    }
                }
                Frame::Other(Message::ErrorResponse(body)) => {
                    return Err(Error::Server(fields_text(body.fields())));
                }
                Frame::Other(Message::CopyDone) => {
                    return Err(Error::Server(
                        "the server ended the replication stream early".into(),
                    ))
                }
                _ => {}
            }
        }
        Ok(chunk)
    }

    fn copy_data(&mut self, data: Bytes) -> Result<Option<(u64, Bytes)>, Error> {
        let short = || Error::Server("a truncated replication message".into());
        match data.first() {
            Some(b'w') => {
                if data.len() < 25 {
                    return Err(short());
                }
                let start = be64(&data[1..9]);
                let end = be64(&data[9..17]);
                self.server_lsn = self.server_lsn.max(end).max(start);
                let message = data.slice(25..);
                match message.first() {
                    Some(b'B') if message.len() >= 9 => {
                        if be64(&message[1..9]) >= self.upto {
                            self.done = true;
                            return Ok(None);
                        }
                        self.in_txn = true;
                    }
                    Some(b'C') if message.len() >= 18 => {
                        self.in_txn = false;
                        if be64(&message[10..18]) >= self.upto {
                            self.done = true;
                        }
                    }
                    _ => {}
                }
                Ok(Some((start, message)))
            }
            Some(b'k') => {
                if data.len() < 18 {
                    return Err(short());
                }
                let end = be64(&data[1..9]);
                self.server_lsn = self.server_lsn.max(end);
                self.asked = false;
                if data[17] == 1 {
                    self.status(false)?;
                }
                if end >= self.upto && !self.in_txn {
                    self.done = true;
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// End the session (the server releases the slot when the backend exits).
    pub fn close(&mut self) {
        self.done = true;
        frontend::terminate(&mut self.out);
        let _ = self.send();
        if let Socket::Tcp(s) = &self.socket {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if let Socket::Tls(s) = &mut self.socket {
            s.conn.send_close_notify();
            let _ = s.flush();
            let _ = s.sock.shutdown(std::net::Shutdown::Both);
        }
        #[cfg(unix)]
        if let Socket::Unix(s) = &self.socket {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// An LSN in PostgreSQL's `X/Y` form.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text() {
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(format_lsn(0), "0/0");
    }

    #[test]
    fn sslmode_require_needs_tls_settings() {
        let config: Config = "host=localhost port=1 user=u sslmode=require"
            .parse()
            .unwrap();
        assert!(
            matches!(connect(&config, None), Err(Error::Usage(m)) if m.contains("sslmode=require"))
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal(&quote_ident("it's")), "'\"it''s\"'");
    }
}
