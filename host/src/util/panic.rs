//! Panics as values. Nothing derived from input should panic; where a bug
//! does, the one item fails with a message and the worker goes on.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Run `f`; a panic becomes `Err(the panic message)` (the default hook
/// has already printed it with its location to stderr).
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    // The callers hold no state that a half-finished `f` could leave
    // inconsistent: they drop what `f` was building.
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| message(p.as_ref()))
}

/// [`catch`] for a future: a panic while it runs becomes `Err(message)`.
pub async fn catch_async<F: std::future::Future>(fut: F) -> Result<F::Output, String> {
    use futures::FutureExt as _;
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|p| message(p.as_ref()))
}

/// The text of a panic payload (`panic!` with a literal or a format).
pub fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_a_value_passes_through() {
        assert_eq!(catch(|| 7), Ok(7));
        assert_eq!(catch(|| -> u8 { panic!("boom") }), Err("boom".to_string()));
        let n = 3;
        assert_eq!(
            catch(|| -> u8 { panic!("boom {n}") }),
            Err("boom 3".to_string())
        );
        assert_eq!(
            catch(|| std::panic::panic_any(5u8)),
            Err("a panic without a message".to_string())
        );
    }

    #[tokio::test]
    async fn a_panicking_future_becomes_its_message() {
        assert_eq!(catch_async(async { 7 }).await, Ok(7));
        let boom: Result<(), String> = catch_async(async { panic!("boom") }).await;
        assert_eq!(boom, Err("boom".to_string()));
    }
}
