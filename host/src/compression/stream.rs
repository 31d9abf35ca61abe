//! The compressed body: the response body as a byte stream, through async-compression's
//! streaming encoder, back into a [`Body`]. Nothing is buffered beyond the encoder's window.
//!
//! Whenever the origin pauses (its next chunk is not there yet), the encoder flushes what it
//! has, so a slowly streamed response reaches the client as it is produced rather than at
//! the end; a fast origin's chunks are compressed together, for the better ratio.

use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use async_compression::Level;
use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio_util::io::{ReaderStream, StreamReader};

use super::Encoding;
use crate::body::{self, Body};
use crate::telemetry::CompressionCounters;

/// Size of the chunks the client receives (at most; a flush sends less).
const OUTPUT_CHUNK: usize = 16 * 1024;

/// `body`, compressed with `encoding` at `level`. Trailers are dropped: the types compressed
/// (text, JSON, XML) do not carry any.
pub(super) fn encode(
    body: Body,
    encoding: Encoding,
    level: u32,
    counters: CompressionCounters,
) -> Body {
    let input_counter = counters.input.clone();
    let input = body
        .into_data_stream()
        .inspect_ok(move |chunk: &Bytes| {
            input_counter.inc_by(chunk.len() as u64);
        })
        .map_err(std::io::Error::other);
    let reader = StreamReader::new(input);
    let level = Level::Precise(i32::try_from(level).unwrap_or(i32::MAX));
    match encoding {
        Encoding::Gzip => output(GzipEncoder::with_quality(reader, level), counters),
        Encoding::Brotli => output(BrotliEncoder::with_quality(reader, level), counters),
        Encoding::Zstd => output(ZstdEncoder::with_quality(reader, level), counters),
    }
}

fn output<R>(encoder: R, counters: CompressionCounters) -> Body
where
    R: tokio::io::AsyncRead + Send + 'static,
{
    let stream = ReaderStream::with_capacity(encoder, OUTPUT_CHUNK)
        .inspect_ok(move |chunk: &Bytes| {
            counters.output.inc_by(chunk.len() as u64);
        })
        .map_ok(Frame::data);
    body::streaming(StreamBody::new(stream))
}
