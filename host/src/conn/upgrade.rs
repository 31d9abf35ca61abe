//! HTTP/1.1 upgrades (WebSocket): each goes upstream on a dedicated connection, never a
//! pooled one, opened through the same [`Target::connect`] path as the pool's.
//!
//! After a `101 Switching Protocols` the connection's task hands the socket to the response's
//! `hyper::upgrade::OnUpgrade`; any other answer is an ordinary response, and the connection
//! closes when its body ends (it never joins the pool).

use http::{Request, Response};
use hyper::client::conn::http1;

use super::body::PooledBody;
use super::{ConnError, Target};
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
    let max_head = target.max_response_head;
    let mut tx = target
        .connect(|io| async move {
            let (tx, conn) = http1::Builder::new()
                .max_buf_size(max_head)
                .handshake::<_, Body>(io)
                .await?;
            // Without this the task would end at the 101 without handing over the socket.
            Ok::<_, hyper::Error>((tx, conn.with_upgrades()))
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
