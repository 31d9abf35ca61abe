//! Where the running config comes from — a file, the embedded default, or one etcd key — and
//! how text read from there becomes a [`Config`]: one path for the start, SIGHUP,
//! `POST /admin/reload` and every new etcd revision.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ReloadError;
use crate::config::{self, Config, ConfigError};
use crate::etcd::config_key::{ConfigKey, Stored};

/// Where the config is read from.
#[derive(Clone)]
pub enum Origin {
    /// [`config::EMBEDDED_DEFAULT`]: nothing to re-read.
    Embedded,
    File(PathBuf),
    /// One etcd key; relative paths in its text resolve against `base` (`--config-dir`).
    /// Boxed: the client is large, and an origin is made once per gateway.
    Etcd {
        key: Box<ConfigKey>,
        base: PathBuf,
    },
}

/// This host's own listen addresses (`gatehouse run --listen-public/--listen-admin`), set over
/// whatever the config says: several gateways can run one shared config on one machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenOverrides {
    pub public: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

/// A config's origin and the settings this host lays over every config read from it.
#[derive(Clone)]
pub struct ConfigSource {
    origin: Origin,
    overrides: ListenOverrides,
}

/// Config text read from a source, not yet loaded.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub text: String,
    /// The etcd revision (`mod_revision`) the text was written at; `None` for a file.
    pub revision: Option<i64>,
}

/// What `/admin/config` shows of the source.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceView {
    Embedded,
    File {
        path: String,
    },
    Etcd {
        endpoints: String,
        key: String,
        /// Where relative paths in the config resolve.
        config_dir: String,
    },
}

impl ConfigSource {
    pub fn new(origin: Origin) -> Self {
        ConfigSource {
            origin,
            overrides: ListenOverrides::default(),
        }
    }

    /// The source a config loaded by path (or the embedded default) came from, as
    /// [`Config::source`] names it.
    pub fn of_loaded(config: &Config) -> Self {
        if config.source == config::EMBEDDED_SOURCE {
            Self::new(Origin::Embedded)
        } else {
            Self::new(Origin::File(PathBuf::from(&config.source)))
        }
    }

    pub fn with_overrides(mut self, overrides: ListenOverrides) -> Self {
        self.overrides = overrides;
        self
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The `source` label of the reload metrics: `embedded`, `file` or `etcd`.
    pub fn kind(&self) -> &'static str {
        match self.origin {
            Origin::Embedded => "embedded",
            Origin::File(_) => "file",
            Origin::Etcd { .. } => "etcd",
        }
    }

    pub fn view(&self) -> SourceView {
        match &self.origin {
            Origin::Embedded => SourceView::Embedded,
            Origin::File(path) => SourceView::File {
                path: path.display().to_string(),
            },
            Origin::Etcd { key, base } => SourceView::Etcd {
                endpoints: key.endpoints().to_owned(),
                key: key.key().to_owned(),
                config_dir: base.display().to_string(),
            },
        }
    }

    /// Reads the source's current text.
    pub async fn fetch(&self) -> Result<Fetched, ReloadError> {
        match &self.origin {
            Origin::Embedded => Ok(Fetched {
                text: config::EMBEDDED_DEFAULT.to_owned(),
                revision: None,
            }),
            Origin::File(path) => {
                let path = path.clone();
                let read = tokio::task::spawn_blocking(move || {
                    std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                        file: path.display().to_string(),
                        source,
                    })
                });
                let text = read.await.map_err(|e| ReloadError::Task(e.to_string()))??;
                Ok(Fetched {
                    text,
                    revision: None,
                })
            }
            Origin::Etcd { key, .. } => match key.read().await?.stored {
                Some(stored) => self.fetched(stored),
                None => Err(ReloadError::NoKey {
                    key: key.key().to_owned(),
                    endpoints: key.endpoints().to_owned(),
                }),
            },
        }
    }

    /// An etcd value as config text.
    pub fn fetched(&self, stored: Stored) -> Result<Fetched, ReloadError> {
        let revision = stored.mod_revision;
        let text = String::from_utf8(stored.value).map_err(|e| ReloadError::NotText {
            name: self.name(Some(revision)),
            error: e.utf8_error().to_string(),
        })?;
        Ok(Fetched {
            text,
            revision: Some(revision),
        })
    }

    /// Loads text read from this source: parse, validate (relative paths against the
    /// source's base), then this host's listen addresses. Blocking: validation reads the
    /// files the config names.
    pub fn load(&self, fetched: &Fetched) -> Result<Config, ReloadError> {
        let name = self.name(fetched.revision);
        let mut config = match &self.origin {
            Origin::Etcd { base, .. } => config::load_text(&fetched.text, &name, base)?,
            Origin::Embedded | Origin::File(_) => config::load_str(&fetched.text, &name)?,
        };
        if let Some(public) = self.overrides.public {
            config.listen.public = public;
        }
        if let Some(admin) = self.overrides.admin {
            // The rule `[listen] admin` follows in validation, for the address that counts.
            if !admin.ip().is_loopback() && config.admin.token.is_none() {
                return Err(ReloadError::OpenAdmin { addr: admin, name });
            }
            config.listen.admin = admin;
        }
        Ok(config)
    }

    /// How errors and [`Config::source`] name a config from here: the file's path, or
    /// `etcd:<key>@<revision>`.
    pub fn name(&self, revision: Option<i64>) -> String {
        match (&self.origin, revision) {
            (Origin::Embedded, _) => config::EMBEDDED_SOURCE.to_owned(),
            (Origin::File(path), _) => path.display().to_string(),
            (Origin::Etcd { key, .. }, Some(revision)) => format!("etcd:{}@{revision}", key.key()),
            (Origin::Etcd { key, .. }, None) => format!("etcd:{}", key.key()),
        }
    }

    /// The directory relative paths resolve against.
    pub fn base(&self) -> &Path {
        match &self.origin {
            Origin::Embedded => Path::new(""),
            Origin::File(path) => path.parent().unwrap_or(Path::new("")),
            Origin::Etcd { base, .. } => base,
        }
    }
}
