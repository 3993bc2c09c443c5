//! Several COPY queries (ctid partitions of one table, each in the same exported snapshot)
//! read at once on Rust threads and merged into one Arrow stream, in arrival order.
//!
//! Each worker thread takes the next query, opens its own connection (`Source`), decodes
//! its batches and sends them over a bounded channel; the consumer (pyarrow, without the
//! GIL) receives them. Dropping the stream stops the workers: their next send fails, and
//! dropping their `CopyStream` cancels the query on the server.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread;

use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::{ArrowError, SchemaRef};

use super::errors::Error;
use super::request::Request;
use super::stream::CopyStream;

enum Msg {
    Batch(RecordBatch),
    Failed(ArrowError),
    Done,
}

/// What every worker needs to open and decode a query.
struct Plan {
    request: Request,
    queries: Vec<String>,
    next: AtomicUsize,
    /// Set when the consumer is gone or a read failed: waiting workers give up.
    stop: Arc<AtomicBool>,
}

impl Plan {
    fn open(&self, index: usize) -> Result<CopyStream, Error> {
        self.request
            .open(self.queries[index].clone(), Some(self.stop.clone()))
    }
}

pub struct ParallelStream {
    rx: Receiver<Msg>,
    schema: SchemaRef,
    plan: Arc<Plan>,
    running: usize,
    finished: bool,
}

impl ParallelStream {
    /// Start `workers` threads over `queries`. The first query of each worker is opened
    /// here, so connection and SQL errors are returned before any batch is read.
    pub fn start(
        request: Request,
        queries: Vec<String>,
        workers: usize,
    ) -> Result<ParallelStream, Error> {
        if queries.is_empty() {
            return Err(Error::Usage("no queries to read".into()));
        }
        // Checks the decoders against the schema once, before connecting.
        request.decoder()?;
        let workers = workers.clamp(1, queries.len());
        let schema = request.schema.clone();
        let plan = Arc::new(Plan {
            request,
            queries,
            next: AtomicUsize::new(workers),
            stop: Arc::new(AtomicBool::new(false)),
        });
        let mut first = Vec::with_capacity(workers);
        for i in 0..workers {
            first.push(plan.open(i)?);
        }
        let (tx, rx) = sync_channel(workers * 2);
        for (i, stream) in first.into_iter().enumerate() {
            let plan = plan.clone();
            let tx = tx.clone();
            thread::Builder::new()
                .name(format!("dativo-copy-{i}"))
                .spawn(move || work(&plan, stream, &tx))
                .map_err(|e| Error::Usage(format!("could not start a thread: {e}")))?;
        }
        Ok(ParallelStream {
            rx,
            schema,
            plan,
            running: workers,
            finished: false,
        })
    }
}

/// One worker: its first stream, then the next unclaimed query, until none is left.
fn work(plan: &Plan, first: CopyStream, tx: &SyncSender<Msg>) {
    let mut stream = Some(first);
    loop {
        let current = if let Some(s) = stream.take() {
            s
        } else {
            let index = plan.next.fetch_add(1, Ordering::SeqCst);
            if index >= plan.queries.len() || plan.stop.load(Ordering::SeqCst) {
                break;
            }
            match plan.open(index) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Msg::Failed(ArrowError::ExternalError(Box::new(e))));
                    return;
                }
            }
        };
        for item in current {
            if plan.stop.load(Ordering::SeqCst) {
                return;
            }
            let failed = item.is_err();
            let msg = match item {
                Ok(batch) => Msg::Batch(batch),
                Err(e) => Msg::Failed(e),
            };
            if tx.send(msg).is_err() || failed {
                return; // the consumer is gone, or this read failed
            }
        }
    }
    let _ = tx.send(Msg::Done);
}

impl Iterator for ParallelStream {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.finished {
            match self.rx.recv() {
                Ok(Msg::Batch(batch)) => return Some(Ok(batch)),
                Ok(Msg::Done) => {
                    self.running -= 1;
                    self.finished = self.running == 0;
                }
                Ok(Msg::Failed(e)) => {
                    self.finished = true;
                    self.plan.stop.store(true, Ordering::SeqCst);
                    return Some(Err(e));
                }
                Err(_) => {
                    self.finished = true;
                    return Some(Err(ArrowError::ExternalError(Box::new(Error::Decode(
                        "a COPY worker stopped without reporting (a bug: please report)".into(),
                    )))));
                }
            }
        }
        None
    }
}

impl RecordBatchReader for ParallelStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

impl Drop for ParallelStream {
    fn drop(&mut self) {
        // Workers notice on their next batch (or their next send fails once `rx` is gone).
        self.plan.stop.store(true, Ordering::SeqCst);
    }
}
