//! Small helpers with no dependency on the rest of the crate.

pub mod names;
pub mod panic;
pub mod task;
pub mod template;
pub mod time;
