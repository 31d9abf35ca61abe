//! What a file-system event means to the gateway's watches (the plugins directory, the
//! listener's certificate files).

use notify::event::{AccessKind, AccessMode, EventKind};

/// Whether a file event may mean new content in the file. inotify also reports every open and
/// read, and each watch reads the files it watches when they change: passing those on would
/// make each read schedule the next one, re-reading the files forever.
pub fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}
