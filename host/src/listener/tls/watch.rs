//! Watching the certificate, key and CA files: a change (after a quiet moment, since a
//! certificate and its key are rarely written at once) re-reads them all.
//!
//! The watch is on the files' directories, not the files: tools that renew certificates
//! (certbot, cert-manager's volumes) replace files by renaming, which a watch on the old
//! inode would miss.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::TlsTerminator;
use crate::fswatch::may_change_content;

/// How long the files must be quiet before they are re-read.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// A running watch; dropping it stops watching.
pub struct CertificateWatch {
    watcher: Mutex<notify::RecommendedWatcher>,
    /// Directories watched, and the file names in them that matter.
    watched: Arc<Mutex<Watched>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Watched {
    dirs: BTreeSet<PathBuf>,
    names: BTreeSet<OsString>,
}

impl std::fmt::Debug for CertificateWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateWatch").finish_non_exhaustive()
    }
}

impl Drop for CertificateWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CertificateWatch {
    /// Starts watching `terminator`'s files; must run inside a tokio runtime.
    pub fn start(terminator: Arc<TlsTerminator>) -> Result<Self, notify::Error> {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let watched = Arc::new(Mutex::new(Watched::default()));
        let filter = Arc::clone(&watched);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                Ok(event) if may_change_content(&event.kind) => {
                    let watched = filter.lock().unwrap_or_else(|p| p.into_inner());
                    let ours = event.paths.iter().any(|p| {
                        p.file_name()
                            .is_some_and(|name| watched.names.contains(name))
                    });
                    if ours {
                        // The receiver is gone only when the watch is being dropped.
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "certificate files watch error"),
            }
        })?;
        let refreshed = Arc::clone(&terminator);
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                loop {
                    match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                        Ok(Some(())) => {}
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                let terminator = Arc::clone(&refreshed);
                // Reading files is blocking I/O.
                if let Err(error) = tokio::task::spawn_blocking(move || terminator.refresh()).await
                {
                    tracing::error!(%error, "certificate reload task failed");
                }
            }
        });
        let watch = CertificateWatch {
            watcher: Mutex::new(watcher),
            watched,
            task,
        };
        watch.follow(&terminator.files());
        Ok(watch)
    }

    /// Watches the directories of `files` (and stops watching those no longer needed): after
    /// a config reload that names other files.
    pub fn follow(&self, files: &[PathBuf]) {
        let dirs: BTreeSet<PathBuf> = files.iter().map(|f| directory(f)).collect();
        let names = files
            .iter()
            .filter_map(|f| f.file_name())
            .map(OsString::from);
        let mut watcher = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        for gone in watched.dirs.difference(&dirs) {
            let _ = watcher.unwatch(gone);
        }
        for dir in dirs.difference(&watched.dirs) {
            if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), %error,
                    "cannot watch a certificate directory; its changes apply on a config reload only");
            }
        }
        watched.dirs = dirs;
        watched.names = names.collect();
    }
}

fn directory(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}
