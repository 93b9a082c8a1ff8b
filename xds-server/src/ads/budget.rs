//! A budget of bytes for requests that have not fully arrived, shared by every ADS stream.
//!
//! tonic's `Streaming` reads a request's HTTP/2 data as it comes and keeps it until the
//! whole gRPC message is there (up to the 16 MiB request cap): without a budget, 60 streams
//! each sending most of a 16 MiB message added ~1 GB. Here each stream's request body is
//! read through a [`Budgeted`] body that follows the gRPC message framing (a 5-byte header
//! with the message length, then the message) and, for the bytes of an unfinished message
//! past its first [`StreamLimits::free_request_bytes`], takes permits of a semaphore of
//! [`StreamLimits::max_pending_request_bytes`] before handing them to tonic; they go back
//! when the message is complete or the stream ends. A stream that cannot get them stops
//! reading (HTTP/2 flow control then holds its client to its window) and, after
//! [`StreamLimits::pending_bytes_wait`], is ended with RESOURCE_EXHAUSTED. Ordinary
//! requests (a few KB) never wait.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::{Body, Frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::limits::StreamLimits;
use crate::metrics::Metrics;

/// gRPC's message header: a compressed flag and a 32-bit big-endian length.
const HEADER_LEN: usize = 5;

/// Permits being acquired; `Err` once the wait is over.
type Acquire = BoxFuture<'static, Result<OwnedSemaphorePermit, ()>>;

/// A request body whose unfinished messages are charged to a shared budget.
pub struct Budgeted<B> {
    inner: B,
    budget: Arc<Semaphore>,
    limits: StreamLimits,
    metrics: Arc<Metrics>,
    /// The header of the message being read, and how much of it came.
    header: [u8; HEADER_LEN],
    header_read: usize,
    /// Bytes of the message being read that came, and that are still to come.
    received: usize,
    remaining: usize,
    /// Permits held for the message being read.
    held: Option<OwnedSemaphorePermit>,
    /// A frame waiting for its permits.
    waiting: Option<(Frame<Bytes>, Acquire)>,
}

impl<B> std::fmt::Debug for Budgeted<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgeted")
            .field("received", &self.received)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl<B> Budgeted<B> {
    /// `inner`, charged to `budget` as `limits` say.
    pub fn new(
        inner: B,
        budget: Arc<Semaphore>,
        limits: StreamLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        Budgeted {
            inner,
            budget,
            limits,
            metrics,
            header: [0; HEADER_LEN],
            header_read: 0,
            received: 0,
            remaining: 0,
            held: None,
            waiting: None,
        }
    }

    /// Follows the framing over `data`; returns the bytes of the unfinished message at its
    /// end to charge (those past its free part).
    fn advance(&mut self, mut data: &[u8]) -> usize {
        let mut charge = 0;
        while !data.is_empty() {
            if self.header_read < HEADER_LEN {
                let take = (HEADER_LEN - self.header_read).min(data.len());
                self.header[self.header_read..self.header_read + take]
                    .copy_from_slice(&data[..take]);
                self.header_read += take;
                data = &data[take..];
                if self.header_read == HEADER_LEN {
                    let len = u32::from_be_bytes([
                        self.header[1],
                        self.header[2],
                        self.header[3],
                        self.header[4],
                    ]);
                    self.remaining = len as usize;
                    self.received = 0;
                    charge = 0;
                    if self.remaining == 0 {
                        self.header_read = 0;
                    }
                }
                continue;
            }
            let take = self.remaining.min(data.len());
            let before = self.received.max(self.limits.free_request_bytes);
            self.received += take;
            self.remaining -= take;
            data = &data[take..];
            charge += self.received.saturating_sub(before);
            if self.remaining == 0 {
                // Complete: what it held goes back; tonic decodes it now.
                self.header_read = 0;
                self.held = None;
                charge = 0;
            }
        }
        charge
    }
}

impl<B> Body for Budgeted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some((_, acquire)) = &mut this.waiting {
            let got = ready!(acquire.as_mut().poll(cx));
            let (frame, _) = this.waiting.take().expect("a frame waits");
            return match got {
                Ok(permit) => {
                    match &mut this.held {
                        Some(held) => held.merge(permit),
                        None => this.held = Some(permit),
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Err(()) => {
                    this.metrics.refused("pending_request_bytes");
                    Poll::Ready(Some(Err(Box::new(Status::resource_exhausted(format!(
                        "the server's memory for requests still arriving is in use by other streams: waited {} ms (--max-pending-request-bytes {})",
                        this.limits.pending_bytes_wait.as_millis(),
                        this.limits.max_pending_request_bytes
                    ))))))
                }
            };
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        let charge = match frame.data_ref() {
            Some(data) => this.advance(data),
            None => 0,
        };
        if charge == 0 {
            return Poll::Ready(Some(Ok(frame)));
        }
        let permits = u32::try_from(charge).unwrap_or(u32::MAX);
        let budget = this.budget.clone();
        let wait = this.limits.pending_bytes_wait;
        let acquire = Box::pin(async move {
            match tokio::time::timeout(wait, budget.acquire_many_owned(permits)).await {
                Ok(Ok(permit)) => Ok(permit),
                _ => Err(()),
            }
        });
        this.waiting = Some((frame, acquire));
        // Polls the acquisition at once (and registers the waker).
        Pin::new(this).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.waiting.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_body(free: usize) -> Budgeted<http_body_util_empty::Empty> {
        Budgeted::new(
            http_body_util_empty::Empty,
            Arc::new(Semaphore::new(1 << 20)),
            StreamLimits {
                free_request_bytes: free,
                ..Default::default()
            },
            Arc::default(),
        )
    }

    mod http_body_util_empty {
        /// A body with nothing: only [`super::Budgeted::advance`] is exercised.
        pub struct Empty;
    }

    fn header(len: u32) -> Vec<u8> {
        let mut h = vec![0];
        h.extend_from_slice(&len.to_be_bytes());
        h
    }

    #[test]
    fn only_the_unfinished_message_past_its_free_bytes_is_charged() {
        let mut body = mk_body(10);
        // A whole 8-byte message, then the header and 30 bytes of a 100-byte one.
        let mut chunk = header(8);
        chunk.extend_from_slice(&[1; 8]);
        chunk.extend(header(100));
        chunk.extend_from_slice(&[2; 30]);
        assert_eq!(body.advance(&chunk), 20);
        // 50 more: all charged; then the last 20 complete it: nothing charged.
        assert_eq!(body.advance(&[2; 50]), 50);
        assert_eq!(body.advance(&[2; 20]), 0);
        // A message split inside its header.
        let h = header(4);
        assert_eq!(body.advance(&h[..2]), 0);
        assert_eq!(body.advance(&h[2..]), 0);
        assert_eq!(body.advance(&[3; 4]), 0);
        assert_eq!(body.received, 4);
        assert_eq!(body.header_read, 0);
    }
}
