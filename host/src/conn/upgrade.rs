//! HTTP/1.1 upgrades (WebSocket): each goes upstream on a dedicated connection, never a
//! pooled one, opened through the same [`Target::connect`] path as the pool's.
//!
//! After a `101 Switching Protocols` the connection's task hands the socket to the response's
//! `hyper::upgrade::OnUpgrade`; any other answer is an ordinary response, and the connection
//! closes when its body ends (it never joins the pool).

use http::{Request, Response};
use hyper::client::conn::http1;

use super::body::PooledBody;
use super::{ConnError, Handshake, Target};
use crate::body::Body;

/// A request extension: send this request as an HTTP/1.1 upgrade (its `Upgrade` and
/// `Connection: upgrade` headers set by the caller) on a dedicated connection, and return a
/// `101` as the response instead of refusing it ([`ConnError::Informational`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeRequest;

/// Sends `req` on a new connection to `target` that may switch protocols.
pub(super) async fn send(
    target: &Target,
    req: Request<Body>,
) -> Result<Response<PooledBody>, ConnError> {
    let asked = req.headers().get(http::header::UPGRADE).cloned();
    let mut tx = target
        .connect(UpgradeHandshake {
            max_head: target.max_response_head,
        })
        .await?;
    let response = tx.send_request(req).await.map_err(|e| {
        if e.is_canceled() {
            ConnError::Closed(e)
        } else {
            ConnError::Send(e)
        }
    })?;
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // The switch must be to what was asked for: the client is told it is.
        let got = response.headers().get(http::header::UPGRADE);
        let same = match (&asked, got) {
            (Some(a), Some(g)) => a.as_bytes().eq_ignore_ascii_case(g.as_bytes()),
            _ => false,
        };
        if !same {
            return Err(ConnError::UpgradeMismatch {
                asked: header_text(asked.as_ref()),
                got: header_text(got),
            });
        }
    }
    Ok(response.map(|body| PooledBody::new(body, None)))
}

fn header_text(value: Option<&http::HeaderValue>) -> String {
    value.map_or_else(
        || "none".to_owned(),
        |v| format!("{:?}", String::from_utf8_lossy(v.as_bytes())),
    )
}

/// The pool's HTTP/1.1 handshake, but with upgrades on: without them the connection's task
/// would end at the 101 without handing over the socket.
struct UpgradeHandshake {
    max_head: usize,
}

impl Handshake for UpgradeHandshake {
    type Sender = http1::SendRequest<Body>;

    async fn handshake<I>(
        self,
        io: hyper_util::rt::TokioIo<I>,
    ) -> Result<
        (
            Self::Sender,
            impl std::future::Future<Output = Result<(), hyper::Error>> + Send + 'static,
        ),
        hyper::Error,
    >
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (tx, conn) = http1::Builder::new()
            .max_buf_size(self.max_head)
            .handshake::<_, Body>(io)
            .await?;
        Ok((tx, conn.with_upgrades()))
    }
}
