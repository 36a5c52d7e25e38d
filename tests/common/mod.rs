//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A component built by `make build` (`cargo build --release --target
/// wasm32-wasip2`), by its artifact name.
pub fn wasm(name: &str) -> PathBuf {
    let p = root()
        .join("target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run `make build` (it builds the plugins and test guests for wasm32-wasip2)",
        p.display()
    );
    p
}

pub fn wasm_bytes(name: &str) -> Vec<u8> {
    std::fs::read(wasm(name)).unwrap()
}

/// A fresh empty directory under the system temp dir.
pub fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "hxp-test-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
