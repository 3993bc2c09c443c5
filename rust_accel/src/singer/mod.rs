//! The Singer RECORD codecs, byte for byte and value for value what
//! `dativo_bridge/codecs/` does (conventions in docs/singer-codecs.md): `encode` (an Arrow
//! batch -> RECORD lines), `decode` (RECORD lines -> an Arrow batch, over the `json`
//! scanner), `lines` (runs of RECORD lines of one stream in a block of input), and the
//! field `metadata` both read. Each declines what it does not do exactly as Python. No
//! PyO3 here: the Python face is `crate::py::{encode, decode}`.

mod decode;
mod encode;
mod json;
mod lines;
mod metadata;

pub use decode::RecordDecoder;
pub use encode::{encode_batch, recycle, write_json_string};
pub use lines::{record_run, split_lines};
