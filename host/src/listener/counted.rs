//! A client connection's stream counted in `gatehouse_open_connections` while it lives, its
//! protocol told from its first bytes the way hyper-util's auto builder tells it (the HTTP/2
//! preface, or anything else for HTTP/1), so the label agrees with how it is served.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::telemetry::OpenConnection;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `io`, counted open until dropped; the guard lives in the stream itself so an upgraded
/// connection (which hyper hands over with its stream) stays counted until it closes.
pub struct Counted<T> {
    io: T,
    open: Option<OpenConnection>,
    /// Preface bytes matched so far; `None` once the protocol is known.
    matched: Option<usize>,
}

impl<T> Counted<T> {
    /// `io` counted by `open` (no counting when `None`).
    pub fn new(io: T, open: Option<OpenConnection>) -> Self {
        Counted {
            io,
            matched: open.as_ref().map(|_| 0),
            open,
        }
    }

    fn decide(&mut self, protocol: &'static str) {
        self.matched = None;
        if let Some(open) = &mut self.open {
            open.speaks(protocol);
        }
    }

    /// Looks at bytes just read; an empty read (EOF) before the whole preface is HTTP/1.
    fn sniff(&mut self, read: &[u8]) {
        let Some(matched) = self.matched else {
            return;
        };
        if read.is_empty() {
            return self.decide("http1");
        }
        let want = &H2_PREFACE[matched..];
        let n = read.len().min(want.len());
        if read[..n] != want[..n] {
            self.decide("http1");
        } else if matched + n == H2_PREFACE.len() {
            self.decide("h2");
        } else {
            self.matched = Some(matched + n);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.matched.is_some() {
            if let Poll::Ready(Ok(())) = polled {
                this.sniff(&buf.filled()[before..]);
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;

    fn open(metrics: &Metrics) -> Option<OpenConnection> {
        Some(metrics.connection_opened("public", false))
    }

    #[test]
    fn the_preface_in_pieces_is_h2_anything_else_http1() {
        let metrics = Metrics::default();
        let mut h2 = Counted::new((), open(&metrics));
        h2.sniff(&H2_PREFACE[..3]);
        assert_eq!(h2.matched, Some(3));
        h2.sniff(&H2_PREFACE[3..]);
        assert_eq!(h2.matched, None);
        let mut h1 = Counted::new((), open(&metrics));
        h1.sniff(b"PRI / HTTP/1.1\r\n");
        assert_eq!(h1.matched, None);
        let text = metrics.encode();
        assert!(text.contains(r#"protocol="h2""#), "{text}");
        assert!(text.contains(r#"protocol="http1""#), "{text}");
        drop((h1, h2));
        let text = metrics.encode();
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("gatehouse_open_connections{") && !l.ends_with(" 0")),
            "{text}"
        );
    }

    fn open_now(metrics: &Metrics) -> Vec<String> {
        metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("gatehouse_open_connections{") && !l.ends_with(" 0"))
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn an_aborted_connection_task_is_uncounted() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let metrics = Metrics::default();
        let (mut client, server) = tokio::io::duplex(64);
        let mut counted = Counted::new(server, open(&metrics));
        let (read, was_read) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let _ = counted.read(&mut buf).await;
            let _ = read.send(());
            // The client says no more: the task waits here until aborted.
            let _ = counted.read(&mut buf).await;
        });
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        was_read.await.expect("the task read");
        let counted_open = open_now(&metrics);
        assert_eq!(counted_open.len(), 1, "{counted_open:?}");
        assert!(
            counted_open[0].contains(r#"protocol="http1""#),
            "{counted_open:?}"
        );
        task.abort();
        let _ = task.await;
        assert_eq!(open_now(&metrics), Vec::<String>::new());
        drop(client);
    }
}
