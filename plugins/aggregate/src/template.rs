//! Path templates (`/products/{query.productid}`) and the optional route pattern that names
//! path segments (`/productdetails/{id}` → `{path.id}`). Values are percent-encoded, so a
//! client cannot smuggle `/`, `?` or `..` into a part's path.

use std::collections::HashMap;

/// Where a template variable takes its value from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// A query parameter of the client request, decoded.
    Query(String),
    /// A named segment of `path_pattern`.
    Path(String),
    /// A header of the client request.
    Header(String),
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Copied as written.
    Literal(String),
    /// Replaced by the variable's value, percent-encoded.
    Var(Var),
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub Vec<Piece>);

/// The values a request offers to templates.
#[derive(Debug, Default)]
pub struct Values {
    /// Decoded query parameters (first value wins).
    pub query: HashMap<String, String>,
    /// Named path segments from `path_pattern`.
    pub path: HashMap<String, String>,
    /// Header values by lower-case name.
    pub headers: HashMap<String, String>,
}

impl Template {
    /// Parse `text`; `path_names` are the names `path_pattern` defines.
    pub fn parse(text: &str, path_names: &[String]) -> Result<Template, String> {
        if !text.starts_with('/') {
            return Err(format!("{text:?} must start with `/`"));
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("{text:?}: unclosed `{{`"))?;
            let var = &after[..close];
            let (source, name) = var.split_once('.').ok_or_else(|| {
                format!("{text:?}: `{{{var}}}` should be `{{query.NAME}}`, `{{path.NAME}}` or `{{header.NAME}}`")
            })?;
            if name.is_empty() {
                return Err(format!("{text:?}: `{{{var}}}` has no name"));
            }
            let var = match source {
                "query" => Var::Query(name.to_string()),
                "header" => Var::Header(name.to_ascii_lowercase()),
                "path" => {
                    if !path_names.iter().any(|n| n == name) {
                        return Err(format!(
                            "{text:?}: `{{path.{name}}}` is not a segment of path_pattern (known: {})",
                            if path_names.is_empty() { "none".to_string() } else { path_names.join(", ") }
                        ));
                    }
                    Var::Path(name.to_string())
                }
                other => {
                    return Err(format!(
                        "{text:?}: unknown source `{other}` (use query, path or header)"
                    ))
                }
            };
            pieces.push(Piece::Var(var));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("{text:?}: stray `}}`"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_string()));
        }
        Ok(Template(pieces))
    }

    /// The variables this template reads.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.0.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Literal(_) => None,
        })
    }

    /// Fill the template; `Err` says which variable is missing or unusable.
    pub fn render(&self, values: &Values) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Var(var) => {
                    let value = match var {
                        Var::Query(n) => values.query.get(n),
                        Var::Path(n) => values.path.get(n),
                        Var::Header(n) => values.headers.get(n),
                    }
                    .ok_or_else(|| format!("missing {}", var.describe()))?;
                    // Encoded, `.` and `..` would still be dot segments to most servers.
                    if value.is_empty() || value == "." || value == ".." {
                        return Err(format!("{} must not be {value:?}", var.describe()));
                    }
                    encode_component(value, &mut out);
                }
            }
        }
        Ok(out)
    }
}

impl Var {
    /// How the variable reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Var::Query(n) => format!("query parameter `{n}`"),
            Var::Path(n) => format!("path segment `{n}`"),
            Var::Header(n) => format!("header `{n}`"),
        }
    }
}

/// Percent-encode everything but RFC 3986 unreserved characters.
pub fn encode_component(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// One segment of a [`PathPattern`].
#[derive(Debug, Clone)]
enum Seg {
    /// Must equal the request's segment as sent.
    Literal(String),
    /// Matches any non-empty segment and names it.
    Named(String),
}

/// A route pattern such as `/productdetails/{id}`: literal segments and named ones.
#[derive(Debug, Clone, Default)]
pub struct PathPattern {
    segs: Vec<Seg>,
    names: Vec<String>,
}

impl PathPattern {
    /// Parse a pattern; each `{name}` must be a whole segment.
    pub fn parse(text: &str) -> Result<PathPattern, String> {
        let Some(body) = text.strip_prefix('/') else {
            return Err(format!("path_pattern = {text:?}: must start with `/`"));
        };
        let mut pattern = PathPattern::default();
        for seg in body.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if name.is_empty() || pattern.names.iter().any(|n| n == name) {
                    return Err(format!(
                        "path_pattern = {text:?}: segment names must be non-empty and unique"
                    ));
                }
                pattern.names.push(name.to_string());
                pattern.segs.push(Seg::Named(name.to_string()));
            } else if seg.contains(['{', '}']) {
                return Err(format!(
                    "path_pattern = {text:?}: `{{name}}` must be a whole segment"
                ));
            } else {
                pattern.segs.push(Seg::Literal(seg.to_string()));
            }
        }
        Ok(pattern)
    }

    /// The names of the pattern's variable segments.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Match `path`; the named segments, percent-decoded, on success.
    pub fn matches(&self, path: &str) -> Option<HashMap<String, String>> {
        let segs: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
        if segs.len() != self.segs.len() {
            return None;
        }
        let mut out = HashMap::new();
        for (want, got) in self.segs.iter().zip(segs) {
            match want {
                Seg::Literal(lit) if lit == got => {}
                Seg::Literal(_) => return None,
                Seg::Named(_) if got.is_empty() => return None,
                Seg::Named(name) => {
                    out.insert(name.clone(), percent_decode(got));
                }
            }
        }
        Some(out)
    }
}

/// Decode `%XX` escapes; invalid escapes are kept as written.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
