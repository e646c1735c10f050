//! Configuration of an `its` node.
//!
//! Layers, later wins: built-in defaults, then a TOML file (`its.toml`), then the environment
//! (`ITS__SECTION__KEY=value`), then command-line overrides (`--set section.key=value`).
//! Unknown keys are rejected at every layer. [`Settings::validate`] checks values and names the
//! key, the bad value and what is allowed. The environment is passed in explicitly so that
//! loading is testable.

mod settings;

use std::collections::HashMap;
use std::path::Path;

pub use settings::*;

/// Configuration schema version written by this build.
pub const CONFIG_VERSION: u32 = 1;

/// Errors of loading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer could not be read or a value has the wrong type or an unknown key.
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A command-line override is not `key=value`.
    #[error("configuration: override {0:?} is not of the form section.key=value")]
    BadOverride(String),
    /// A value is outside what is allowed.
    #[error("configuration: `{key}` = {value} is invalid: {allowed}")]
    Invalid {
        /// Dotted key, e.g. `scheduler.max_batch_timeout_ms`.
        key: String,
        /// The value found, as written.
        value: String,
        /// What is allowed.
        allowed: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        key: &str,
        value: impl std::fmt::Debug,
        allowed: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.to_owned(),
            value: format!("{value:?}"),
            allowed: allowed.into(),
        }
    }
}

/// Where configuration comes from.
#[derive(Debug, Default, Clone)]
pub struct Sources<'a> {
    /// A TOML file; when `None`, `its.toml` in the current directory is read if it exists.
    pub file: Option<&'a Path>,
    /// Environment variables (normally `std::env::vars()`); only `ITS__*` ones are read.
    pub env: HashMap<String, String>,
    /// `section.key=value` overrides from the command line.
    pub overrides: Vec<String>,
}

/// Loads, merges and validates the configuration.
pub fn load(sources: &Sources<'_>) -> Result<Settings, ConfigError> {
    let defaults = defaults()?;
    let mut builder = config::Config::builder().add_source(defaults);
    builder = match sources.file {
        Some(path) => builder.add_source(config::File::from(path).format(config::FileFormat::Toml)),
        None => builder.add_source(
            config::File::with_name("its.toml")
                .format(config::FileFormat::Toml)
                .required(false),
        ),
    };
    let env: HashMap<String, String> = sources
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("ITS__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut environment = config::Environment::with_prefix("ITS")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .source(Some(env));
    for key in LIST_KEYS {
        environment = environment.list_separator(",").with_list_parse_key(key);
    }
    builder = builder.add_source(environment);
    for o in &sources.overrides {
        let (k, v) = o
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| ConfigError::BadOverride(o.clone()))?;
        let k = k.trim();
        builder = if LIST_KEYS.contains(&k) {
            builder.set_override(
                k,
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .collect::<Vec<_>>(),
            )?
        } else {
            builder.set_override(k, v.trim())?
        };
    }
    let settings: Settings = builder.build()?.try_deserialize()?;
    settings.validate()?;
    Ok(settings)
}

/// Loads the built-in defaults overlaid with TOML `text` (no file, environment or overrides) and
/// validates the result: what `--config FILE` does with the file's contents.
pub fn from_toml_str(text: &str) -> Result<Settings, ConfigError> {
    let defaults = defaults()?;
    let settings: Settings = config::Config::builder()
        .add_source(defaults)
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()?
        .try_deserialize()?;
    settings.validate()?;
    Ok(settings)
}

/// The built-in defaults as the first configuration source. Turning `Settings` into the
/// `config` crate's tree takes milliseconds (almost all of a load), and the defaults are
/// constant, so it is done once per process.
fn defaults() -> Result<config::Config, ConfigError> {
    static DEFAULTS: std::sync::OnceLock<config::Config> = std::sync::OnceLock::new();
    if let Some(d) = DEFAULTS.get() {
        return Ok(d.clone());
    }
    let d = config::Config::try_from(&Settings::default())?;
    Ok(DEFAULTS.get_or_init(|| d).clone())
}

/// Keys whose values are lists; in the environment and overrides they are comma-separated.
const LIST_KEYS: [&str; 4] = [
    "scheduler.batch_sizes",
    "engine.providers",
    "engine.gpu_devices",
    "cameras.ids",
];
