//! Spawned tasks tied to their owner.

/// A spawned task that is aborted when this handle is dropped (a request
/// that goes away takes its work with it).
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
