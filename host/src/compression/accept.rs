//! The client's `Accept-Encoding` (RFC 9110 §12.5.3), parsed once per request into the
//! weights of the codings the gateway can produce, and the choice among them.

use http::header::{HeaderMap, ACCEPT_ENCODING};

use super::Encoding;

/// A weight in thousandths: `q=0.5` is 500; 0 means "not acceptable".
type Weight = u16;

const FULL: Weight = 1000;

/// What one request's `Accept-Encoding` says about the codings the gateway knows, captured
/// before the request plugins can change the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AcceptEncoding {
    /// The header was present (absent: the client gets identity, as nginx and browsers
    /// expect, though RFC 9110 would allow any coding).
    present: bool,
    gzip: Option<Weight>,
    br: Option<Weight>,
    zstd: Option<Weight>,
    identity: Option<Weight>,
    star: Option<Weight>,
}

impl AcceptEncoding {
    /// Reads every `Accept-Encoding` field of the request. Elements that do not parse (a bad
    /// `q`) are ignored, as if not sent.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut accept = AcceptEncoding::default();
        for value in headers.get_all(ACCEPT_ENCODING) {
            accept.present = true;
            let Ok(value) = value.to_str() else { continue };
            for element in value.split(',') {
                let mut parts = element.split(';');
                let coding = parts.next().unwrap_or("").trim();
                if coding.is_empty() {
                    continue;
                }
                let mut weight = FULL;
                let mut valid = true;
                for param in parts {
                    let Some((name, value)) = param.split_once('=') else {
                        valid = false;
                        break;
                    };
                    if name.trim().eq_ignore_ascii_case("q") {
                        match parse_q(value.trim()) {
                            Some(q) => weight = q,
                            None => valid = false,
                        }
                    }
                }
                if !valid {
                    continue;
                }
                let slot = if coding.eq_ignore_ascii_case("gzip")
                    || coding.eq_ignore_ascii_case("x-gzip")
                {
                    &mut accept.gzip
                } else if coding.eq_ignore_ascii_case("br") {
                    &mut accept.br
                } else if coding.eq_ignore_ascii_case("zstd") {
                    &mut accept.zstd
                } else if coding.eq_ignore_ascii_case("identity") {
                    &mut accept.identity
                } else if coding == "*" {
                    &mut accept.star
                } else {
                    continue;
                };
                // Listed twice: the higher weight wins (a client contradicting itself).
                *slot = Some(slot.map_or(weight, |w| w.max(weight)));
            }
        }
        accept
    }

    fn weight(&self, encoding: Encoding) -> Weight {
        let explicit = match encoding {
            Encoding::Gzip => self.gzip,
            Encoding::Brotli => self.br,
            Encoding::Zstd => self.zstd,
        };
        explicit.or(self.star).unwrap_or(0)
    }

    /// The coding to use, from the server's `preference` (best first): the one the client
    /// weighs highest, ties going to the server's order. None when the client sent no
    /// `Accept-Encoding`, refuses all of them, or weighs identity higher than the best.
    pub fn choose(&self, preference: &[Encoding]) -> Option<Encoding> {
        if !self.present {
            return None;
        }
        let mut best: Option<(Encoding, Weight)> = None;
        for &encoding in preference {
            let weight = self.weight(encoding);
            if weight > 0 && best.is_none_or(|(_, w)| weight > w) {
                best = Some((encoding, weight));
            }
        }
        let (encoding, weight) = best?;
        // Unlisted, identity is acceptable but not preferred (RFC 9110 §12.5.3): it only
        // wins over a coding the client weighs lower, listed itself or through `*`.
        let identity = self.identity.or(self.star).unwrap_or(0);
        (weight >= identity).then_some(encoding)
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_q(value: &str) -> Option<Weight> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: Weight = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += Weight::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(FULL),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const ALL: [Encoding; 3] = [Encoding::Brotli, Encoding::Zstd, Encoding::Gzip];

    fn choose(values: &[&str], preference: &[Encoding]) -> Option<Encoding> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        AcceptEncoding::from_headers(&headers).choose(preference)
    }

    #[test]
    fn server_order_breaks_ties() {
        assert_eq!(
            choose(&["gzip, deflate, br, zstd"], &ALL),
            Some(Encoding::Brotli)
        );
        assert_eq!(choose(&["gzip, zstd"], &ALL), Some(Encoding::Zstd));
        assert_eq!(
            choose(&["br, gzip"], &[Encoding::Gzip, Encoding::Brotli]),
            Some(Encoding::Gzip)
        );
    }

    #[test]
    fn the_clients_weights_come_first() {
        assert_eq!(choose(&["br;q=0.5, gzip"], &ALL), Some(Encoding::Gzip));
        assert_eq!(
            choose(&["br;q=0.5, gzip;q=0.8"], &ALL),
            Some(Encoding::Gzip)
        );
        assert_eq!(
            choose(&["*;q=0.5, gzip;q=0.4"], &ALL),
            Some(Encoding::Brotli)
        );
        assert_eq!(choose(&["GZIP;Q=1.0"], &ALL), Some(Encoding::Gzip));
        assert_eq!(choose(&["x-gzip"], &ALL), Some(Encoding::Gzip));
    }

    #[test]
    fn q_zero_refuses() {
        assert_eq!(choose(&["gzip;q=0"], &ALL), None);
        assert_eq!(choose(&["gzip;q=0, br;q=0.000"], &ALL), None);
        assert_eq!(choose(&["*;q=0"], &ALL), None);
        assert_eq!(choose(&["*, br;q=0"], &ALL), Some(Encoding::Zstd));
        assert_eq!(choose(&["*;q=0, gzip"], &ALL), Some(Encoding::Gzip));
    }

    #[test]
    fn identity_may_be_preferred_or_refused() {
        assert_eq!(choose(&["identity"], &ALL), None);
        assert_eq!(choose(&["gzip;q=0.5, identity"], &ALL), None);
        assert_eq!(
            choose(&["gzip;q=0.5, identity;q=0"], &ALL),
            Some(Encoding::Gzip)
        );
        assert_eq!(choose(&["gzip;q=0.5, *;q=0"], &ALL), Some(Encoding::Gzip));
    }

    #[test]
    fn absent_empty_and_unknown_mean_identity() {
        assert_eq!(choose(&[], &ALL), None);
        assert_eq!(choose(&[""], &ALL), None);
        assert_eq!(choose(&["deflate, compress"], &ALL), None);
        assert_eq!(choose(&["*"], &ALL), Some(Encoding::Brotli));
    }

    #[test]
    fn several_fields_are_one_list() {
        assert_eq!(choose(&["deflate", "gzip"], &ALL), Some(Encoding::Gzip));
    }

    #[test]
    fn bad_weights_are_ignored() {
        assert_eq!(choose(&["br;q=2, gzip"], &ALL), Some(Encoding::Gzip));
        assert_eq!(choose(&["br;q=0.5555, gzip;q=abc"], &ALL), None);
        assert_eq!(choose(&["br;q, gzip;q=1.001"], &ALL), None);
        assert_eq!(parse_q("0.125"), Some(125));
        assert_eq!(parse_q("1."), Some(1000));
        assert_eq!(parse_q(".5"), None);
    }
}
