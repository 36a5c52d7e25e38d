//! Spawned tasks tied to their owner.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A spawned task that is aborted when this handle is dropped (a request
/// that goes away takes its work with it); awaited like its `JoinHandle`.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}
