//! Validation of a route's upgrade keys, `upgrades` and `upgrade_idle_timeout`
//! (docs/websocket.md); converts into `tunnel::UpgradePolicy`.

use super::model::RawRoute;
use super::validate::Validator;
use super::{RouteConfig, ServiceConfig};
use crate::tunnel::{UpgradePolicy, UpgradeProtocol, DEFAULT_IDLE_TIMEOUT};

/// The route's upgrade policy; `None` without `upgrades` (or with an empty list).
pub(super) fn route(v: &mut Validator<'_>, r: &RawRoute, at: &str) -> Option<UpgradePolicy> {
    let idle_field = format!("{at}.upgrade_idle_timeout");
    let Some(upgrades) = &r.upgrades else {
        if let Some(idle) = &r.upgrade_idle_timeout {
            v.problem(
                idle.span(),
                idle_field,
                "upgrade_idle_timeout needs upgrades (e.g. upgrades = [\"websocket\"])".to_owned(),
            );
        }
        return None;
    };
    let mut protocols = Vec::new();
    for (j, token) in upgrades.get_ref().iter().enumerate() {
        match UpgradeProtocol::parse(token.get_ref()) {
            Some(p) if protocols.contains(&p) => v.problem(
                token.span(),
                format!("{at}.upgrades[{j}]"),
                format!("{:?} is listed twice", token.get_ref()),
            ),
            Some(p) => protocols.push(p),
            None => v.problem(
                token.span(),
                format!("{at}.upgrades[{j}]"),
                format!(
                    "{:?} is not an upgrade the gateway proxies; expected {}",
                    token.get_ref(),
                    UpgradeProtocol::NAMES
                ),
            ),
        }
    }
    let idle_timeout = v.duration(&r.upgrade_idle_timeout, &idle_field, DEFAULT_IDLE_TIMEOUT);
    (!protocols.is_empty()).then_some(UpgradePolicy {
        protocols,
        idle_timeout,
    })
}

/// An HTTP/1.1 upgrade cannot go to an HTTP/2 service: refuses `upgrades` on a route whose
/// service, or any of whose split targets, speaks h2 or h2c.
pub(super) fn check_protocols(
    v: &mut Validator<'_>,
    raw: &[RawRoute],
    routes: &[RouteConfig],
    services: &[ServiceConfig],
) {
    let http2 = |name: &str| {
        services
            .iter()
            .find(|s| s.name.0 == name && s.protocol.is_http2())
            .map(|s| s.protocol.name())
    };
    for (i, (r, route)) in raw.iter().zip(routes).enumerate() {
        let (Some(upgrades), Some(_)) = (&r.upgrades, &route.upgrade) else {
            continue;
        };
        for (name, protocol) in route
            .target
            .targets()
            .iter()
            .filter_map(|(s, _)| http2(&s.0).map(|p| (s, p)))
        {
            v.problem(
                upgrades.span(),
                format!("routes[{i}].upgrades"),
                format!(
                    "service {:?} speaks {protocol} (HTTP/2), which cannot carry an HTTP/1.1 \
                     upgrade; remove upgrades or send this route to an http1 service",
                    name.0
                ),
            );
        }
    }
}
