//! Embeds the default analytics and correlation plugins (built by `make
//! plugins` into target/plugins/) in the binary, so `hxp-events plugin
//! test` can feed a responses plugin without a checkout of this repository.
//! Without them (the host built before the plugins), the binary says so
//! when a test needs them and takes `--analytics`/`--correlation` paths.

use std::path::PathBuf;

const STAGES: [&str; 2] = ["analytics", "correlation"];

fn main() {
    println!("cargo:rerun-if-env-changed=HXP_EMBED_PLUGINS");
    let dir = std::env::var_os("HXP_EMBED_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let manifest =
                PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
            manifest.join("../target/plugins")
        });
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    for stage in STAGES {
        let src = dir.join(format!("{stage}.wasm"));
        println!("cargo:rerun-if-changed={}", src.display());
        let bytes = std::fs::read(&src).unwrap_or_else(|_| {
            println!(
                "cargo:warning=no {} (run `make plugins` first): `plugin test` will need --{stage}",
                src.display()
            );
            Vec::new()
        });
        if let Err(e) = std::fs::write(out.join(format!("{stage}.wasm")), bytes) {
            panic!("writing OUT_DIR/{stage}.wasm: {e}");
        }
    }
}
