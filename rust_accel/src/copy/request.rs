//! What opening a COPY needs besides its query: the connection string, the statements
//! run first, the schema and decoders of its batches, their byte budget and TLS. One
//! read (`read_copy`) opens one query with it; a parallel read opens one per partition.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arrow_schema::SchemaRef;
use rustls::ClientConfig;

use super::batch::BatchDecoder;
use super::errors::Error;
use super::source::Source;
use super::stream::CopyStream;

/// The settings shared by every query of a read.
pub struct Request {
    pub dsn: String,
    /// Run on the connection before the COPY (e.g. to join an exported snapshot).
    pub setup: Vec<String>,
    pub schema: SchemaRef,
    /// One decoder name per field of `schema` (see `BatchDecoder::new`).
    pub decoders: Vec<String>,
    /// A batch is cut after the tuple that brings its COPY bytes to this many or more.
    pub batch_bytes: usize,
    pub tls: Option<Arc<ClientConfig>>,
}

impl Request {
    /// A decoder for the batches (the decoders are checked against the schema here).
    pub fn decoder(&self) -> Result<BatchDecoder, Error> {
        BatchDecoder::new(self.schema.clone(), &self.decoders, self.batch_bytes)
    }

    /// Start `query` (a `COPY ... TO STDOUT (FORMAT binary)`): the decoder is built first,
    /// so a decoder that does not fit the schema fails before connecting. `cancel`: a
    /// flag that, once set, makes the source give up (see `Source::open`).
    pub fn open(
        &self,
        query: String,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<CopyStream, Error> {
        let decoder = self.decoder()?;
        let source = Source::open(
            &self.dsn,
            self.setup.clone(),
            query,
            cancel,
            self.tls.clone(),
        )?;
        Ok(CopyStream::new(decoder, source))
    }
}
