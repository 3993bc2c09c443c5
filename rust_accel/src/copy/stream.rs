//! A running COPY as an Arrow `RecordBatchReader`: buffers from the reader thread go
//! through the batch decoder. Exported to Python through the C stream interface, whose
//! consumer (pyarrow) calls `next` without holding the GIL.

use std::panic::{catch_unwind, AssertUnwindSafe};

use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::{ArrowError, SchemaRef};

use super::batch::BatchDecoder;
use super::errors::Error;
use super::source::{Chunk, Source};

pub struct CopyStream {
    decoder: BatchDecoder,
    source: Source,
    buf: Vec<u8>,
    pos: usize,
    finished: bool,
}

impl CopyStream {
    pub fn new(decoder: BatchDecoder, source: Source) -> Self {
        CopyStream {
            decoder,
            source,
            buf: Vec::new(),
            pos: 0,
            finished: false,
        }
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>, Error> {
        if self.finished {
            return Ok(None);
        }
        loop {
            if !self.decoder.is_done() && self.decoder.feed(&self.buf, &mut self.pos)? {
                return self.decoder.finish_batch().map(Some);
            }
            if self.decoder.is_done() {
                // The trailer is in; wait for the command to complete without an error.
                match self.source.recv() {
                    Chunk::End => {}
                    Chunk::Data(_) => {
                        return Err(Error::Decode("data after the COPY trailer".into()))
                    }
                    Chunk::Failed(e) => return Err(e),
                }
                self.finished = true;
                return if self.decoder.rows() > 0 {
                    self.decoder.finish_batch().map(Some)
                } else {
                    Ok(None)
                };
            }
            match self.source.recv() {
                Chunk::Data(data) => self.take(data),
                Chunk::End => {
                    return Err(Error::Decode(
                        "the COPY data ended without its trailer".into(),
                    ))
                }
                Chunk::Failed(e) => return Err(e),
            }
        }
    }

    /// Continue with `data`; an unfinished tuple at the end of the current buffer (rare:
    /// PostgreSQL sends one tuple per message) is carried over in front of it.
    fn take(&mut self, data: Vec<u8>) {
        if self.pos >= self.buf.len() {
            let done = std::mem::replace(&mut self.buf, data);
            self.source.recycle(done);
        } else {
            self.buf.drain(..self.pos);
            self.buf.extend_from_slice(&data);
            self.source.recycle(data);
        }
        self.pos = 0;
    }
}

impl Iterator for CopyStream {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        // A panic must not unwind into the C stream's caller.
        let result = catch_unwind(AssertUnwindSafe(|| self.next_batch())).unwrap_or_else(|_| {
            Err(Error::Decode(
                "internal error in the COPY decoder (a bug: please report)".into(),
            ))
        });
        match result {
            Ok(batch) => batch.map(Ok),
            Err(e) => {
                self.finished = true;
                Some(Err(ArrowError::ExternalError(Box::new(e))))
            }
        }
    }
}

impl RecordBatchReader for CopyStream {
    fn schema(&self) -> SchemaRef {
        self.decoder.schema()
    }
}
