//! The gRPC codec of every sluice service: prost, with small per-stream buffers.
//!
//! tonic keeps one encode and one decode buffer per stream for the stream's whole life, sized
//! by the codec (8 KiB each by default) and grown to the largest message ever sent or received.
//! A control plane holds a stream per data-plane pod, so these buffers are most of what a
//! connected pod costs it. Small initial buffers plus responses split under a small bound (see
//! the control plane's `xds::stream`) keep that cost low; a bigger message still grows its
//! stream's buffer as needed.

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// A stream's encode buffer: one response of the control plane's size bound fits without
/// growing it.
pub const ENCODE_BUFFER_BYTES: usize = 4 << 10;
/// A stream's decode buffer: room for an ACK or a subscription change.
pub const DECODE_BUFFER_BYTES: usize = 1 << 10;
/// Every encoded message is handed to HTTP/2 at once (any non-empty buffer passes this), so the
/// encode buffer never grows to hold several queued responses.
const YIELD_THRESHOLD_BYTES: usize = 1;

/// [`ProstCodec`] with small per-stream buffers.
#[derive(Debug, Clone)]
pub struct CompactCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CompactCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for CompactCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(
            ENCODE_BUFFER_BYTES,
            YIELD_THRESHOLD_BYTES,
        ))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(
            DECODE_BUFFER_BYTES,
            YIELD_THRESHOLD_BYTES,
        ))
    }
}
