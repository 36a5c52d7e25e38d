//! `hxp-events plugin new`: a plugin project, from the templates this binary
//! carries, that builds with one command (`make`) and passes `make test`
//! (`plugin test --expect`) wherever it is created. Nothing is read from a
//! checkout of this repository: the WIT, the templates, the sample events
//! with their expected output and, for Rust, the SDK's sources are all
//! compiled in.

use crate::plugin::PluginKind;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// The languages a plugin can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// The SDK (vendored into the project), built for wasm32-wasip2.
    Rust,
    /// componentize-py (from PyPI, installed into the project's .venv).
    Python,
    /// componentize-js through jco (from npm, installed into node_modules).
    Js,
}

/// One file of a project: where it goes and what it holds (with
/// `{{name}}`, `{{crate}}`, `{{stage}}` and `{{world}}` still in it).
type File = (&'static str, &'static str);

macro_rules! template {
    ($path:literal) => {
        include_str!(concat!("../../templates/", $path))
    };
}

/// The SDK's sources as the project's `hxp-plugin-sdk/` (a path
/// dependency): the crate is not on crates.io.
const SDK: &[File] = &[
    (
        "hxp-plugin-sdk/Cargo.toml",
        template!("rust/sdk-Cargo.toml"),
    ),
    ("hxp-plugin-sdk/wit/events.wit", hxp_plugin_sdk::WIT),
    (
        "hxp-plugin-sdk/src/lib.rs",
        include_str!("../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "hxp-plugin-sdk/src/duration.rs",
        include_str!("../../../plugins/sdk/src/duration.rs"),
    ),
    (
        "hxp-plugin-sdk/src/expr.rs",
        include_str!("../../../plugins/sdk/src/expr.rs"),
    ),
    (
        "hxp-plugin-sdk/src/expr_proptests.rs",
        include_str!("../../../plugins/sdk/src/expr_proptests.rs"),
    ),
    (
        "hxp-plugin-sdk/src/fixed.rs",
        include_str!("../../../plugins/sdk/src/fixed.rs"),
    ),
    (
        "hxp-plugin-sdk/src/guest.rs",
        include_str!("../../../plugins/sdk/src/guest.rs"),
    ),
    (
        "hxp-plugin-sdk/src/patterns.rs",
        include_str!("../../../plugins/sdk/src/patterns.rs"),
    ),
    (
        "hxp-plugin-sdk/src/plugin.rs",
        include_str!("../../../plugins/sdk/src/plugin.rs"),
    ),
    (
        "hxp-plugin-sdk/src/wit_glue.rs",
        include_str!("../../../plugins/sdk/src/wit_glue.rs"),
    ),
];

/// What every project has besides its language's files.
fn common_files(stage: PluginKind) -> Vec<File> {
    let expected = match stage {
        PluginKind::Analytics => template!("common/expected-analytics.ndjson"),
        PluginKind::Correlation => template!("common/expected-correlation.ndjson"),
        PluginKind::Responses => template!("common/expected-responses.ndjson"),
    };
    vec![
        ("samples/events.ndjson", template!("common/events.ndjson")),
        ("samples/expected.ndjson", expected),
        ("README.md", template!("common/README.md")),
        (".gitignore", template!("common/gitignore")),
    ]
}

/// The build files and the stage's source of a language.
fn language_files(lang: Lang, stage: PluginKind) -> Vec<File> {
    use PluginKind::*;
    match lang {
        Lang::Rust => {
            let source = match stage {
                Analytics => template!("rust/src/analytics.rs"),
                Correlation => template!("rust/src/correlation.rs"),
                Responses => template!("rust/src/responses.rs"),
            };
            let mut files = vec![
                ("Cargo.toml", template!("rust/Cargo.toml")),
                ("Makefile", template!("rust/Makefile")),
                ("src/lib.rs", source),
            ];
            files.extend_from_slice(SDK);
            files
        }
        Lang::Python => {
            let source = match stage {
                Analytics => template!("python/analytics.py"),
                Correlation => template!("python/correlation.py"),
                Responses => template!("python/responses.py"),
            };
            vec![
                ("Makefile", template!("python/Makefile")),
                ("app.py", source),
                ("hxp.py", template!("python/hxp.py")),
                ("wit/events.wit", hxp_plugin_sdk::WIT),
            ]
        }
        Lang::Js => {
            let source = match stage {
                Analytics => template!("js/analytics.js"),
                Correlation => template!("js/correlation.js"),
                Responses => template!("js/responses.js"),
            };
            vec![
                ("Makefile", template!("js/Makefile")),
                ("package.json", template!("js/package.json")),
                ("app.js", source),
                ("hxp.js", template!("js/hxp.js")),
                ("wit/events.wit", hxp_plugin_sdk::WIT),
            ]
        }
    }
}

/// Options of `plugin new`.
pub struct NewOptions {
    pub name: String,
    pub stage: PluginKind,
    pub lang: Lang,
    /// Where the project goes (default: `./NAME`); must not exist or be
    /// empty.
    pub dir: Option<PathBuf>,
}

/// Write the project; its directory.
pub fn new_project(opts: &NewOptions) -> anyhow::Result<PathBuf> {
    check_name(&opts.name)?;
    let dir = opts
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&opts.name));
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} exists and is not empty", dir.display());
    }
    let mut files = language_files(opts.lang, opts.stage);
    files.extend(common_files(opts.stage));
    for (path, text) in files {
        let dest = dir.join(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let text = fill(text, opts);
        std::fs::write(&dest, text).with_context(|| format!("writing {}", dest.display()))?;
    }
    Ok(dir)
}

/// A plugin name the host accepts that is also a package name in every
/// language's tools: a lowercase letter, then lowercase letters, digits
/// and '-'.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "plugin name '{name}': use a lowercase letter, then up to 63 lowercase letters, digits or '-' (not last)"
        );
    }
    crate::deploy::check_name(name).map_err(anyhow::Error::msg)
}

/// The template with the project's values in.
fn fill(text: &str, opts: &NewOptions) -> String {
    text.replace("{{name}}", &opts.name)
        .replace("{{crate}}", &opts.name.replace('-', "_"))
        .replace("{{stage}}", opts.stage.as_str())
        .replace("{{world}}", opts.stage.world())
        .replace(
            "{{language}}",
            match opts.lang {
                Lang::Rust => "Rust",
                Lang::Python => "Python",
                Lang::Js => "JavaScript",
            },
        )
}

/// What to do next, printed after the project is written.
pub fn next_steps(dir: &Path, lang: Lang) -> String {
    let needs = match lang {
        Lang::Rust => "the wasm32-wasip2 target (rustup)",
        Lang::Python => "componentize-py (pip, into .venv)",
        Lang::Js => "jco and componentize-js (npm, into node_modules)",
    };
    format!(
        "created {dir}\n\n  cd {dir}\n  make          # build; installs {needs} the first time\n  make test     # plugin test against samples/expected.ndjson\n\nthen deploy: hxp-events plugin deploy <name>.wasm --url http://127.0.0.1:9100 --token $TOKEN",
        dir = dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vendored_sdk_holds_every_source_file() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk/src");
        for entry in std::fs::read_dir(&src).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let path = format!("hxp-plugin-sdk/src/{name}");
            assert!(
                SDK.iter().any(|(p, _)| *p == path),
                "{name} is missing from scaffold::SDK"
            );
        }
    }

    #[test]
    fn the_vendored_sdk_uses_the_workspace_wit_bindgen() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let workspace = std::fs::read_to_string(root).unwrap();
        let line = workspace
            .lines()
            .find(|l| l.starts_with("wit-bindgen"))
            .unwrap();
        assert!(
            template!("rust/sdk-Cargo.toml").contains(line),
            "rust/sdk-Cargo.toml should say `{line}`"
        );
    }

    #[test]
    fn names_must_suit_every_language() {
        for good in ["pager", "my-rules2", "a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Pager",
            "2fa",
            "my_rules",
            "x-",
            "a/b",
            "../x",
            &"a".repeat(65),
            "backtest",
            "reload",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_are_filled_in() {
        let opts = NewOptions {
            name: "my-pager".into(),
            stage: PluginKind::Responses,
            lang: Lang::Rust,
            dir: None,
        };
        let cargo = fill(template!("rust/Cargo.toml"), &opts);
        assert!(cargo.contains("name = \"my-pager\""), "{cargo}");
        let make = fill(template!("rust/Makefile"), &opts);
        assert!(make.contains("release/my_pager.wasm"), "{make}");
        assert!(!make.contains("{{"), "{make}");
    }

    #[test]
    fn a_project_is_not_written_over_files() {
        let dir = std::env::temp_dir().join(format!("hxp-scaffold-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keep.txt"), "mine").unwrap();
        let opts = NewOptions {
            name: "pager".into(),
            stage: PluginKind::Responses,
            lang: Lang::Rust,
            dir: Some(dir.clone()),
        };
        let err = new_project(&opts).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.join("keep.txt")).unwrap(),
            "mine"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
