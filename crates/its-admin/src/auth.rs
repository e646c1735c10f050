//! Bearer tokens and roles.
//!
//! Tokens come from `admin.tokens` and from `admin.tokens_file` (a mounted secret). A request's
//! token is compared with every configured token in constant time, and no token is ever logged
//! or returned: log lines and errors name the token's `name` only.

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use its_config::{AdminRole, AdminSettings};
use subtle::{Choice, ConstantTimeEq};

use crate::AdminError;
use crate::problem::ApiError;

struct Entry {
    name: String,
    role: AdminRole,
    token: Vec<u8>,
}

/// The configured tokens.
pub(crate) struct Tokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.entries.len())
            .finish()
    }
}

/// Shortest accepted token.
const MIN_TOKEN_LEN: usize = 16;

fn parse_role(s: &str) -> Option<AdminRole> {
    match s {
        "viewer" => Some(AdminRole::Viewer),
        "operator" => Some(AdminRole::Operator),
        "admin" => Some(AdminRole::Admin),
        _ => None,
    }
}

impl Tokens {
    /// The tokens of the settings and of the tokens file.
    pub(crate) fn load(s: &AdminSettings) -> Result<Tokens, AdminError> {
        let mut entries: Vec<Entry> = s
            .tokens
            .iter()
            .enumerate()
            .map(|(n, t)| Entry {
                name: if t.name.is_empty() {
                    format!("admin.tokens[{n}]")
                } else {
                    t.name.clone()
                },
                role: t.role,
                token: t.token.0.as_bytes().to_vec(),
            })
            .collect();
        if !s.tokens_file.is_empty() {
            let text =
                std::fs::read_to_string(&s.tokens_file).map_err(|e| AdminError::TokensFile {
                    path: s.tokens_file.clone(),
                    detail: e.to_string(),
                })?;
            entries.extend(
                parse_tokens_file(&text).map_err(|detail| AdminError::TokensFile {
                    path: s.tokens_file.clone(),
                    detail,
                })?,
            );
        }
        Ok(Tokens { entries })
    }

    /// Whether no token is configured (then every request is allowed; loopback only).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The role of the request's bearer token, or why it has none.
    fn identify(&self, req: &HttpRequest) -> Result<(&str, AdminRole), ApiError> {
        let Some(value) = req.headers().get(AUTHORIZATION) else {
            return Err(ApiError::Unauthorized {
                detail: "this endpoint needs an `Authorization: Bearer <token>` header".into(),
                token_given: false,
            });
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().as_bytes())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::Unauthorized {
                detail: "the Authorization header is not of the form `Bearer <token>`".into(),
                token_given: false,
            })?;
        // Compare with every token, without an early exit, so the time taken does not tell
        // which token (or how much of one) matched.
        let mut found: Option<usize> = None;
        for (n, e) in self.entries.iter().enumerate() {
            if bool::from(ct_eq(&e.token, presented)) && found.is_none() {
                found = Some(n);
            }
        }
        match found {
            Some(n) => Ok((&self.entries[n].name, self.entries[n].role)),
            None => Err(ApiError::Unauthorized {
                detail: "the bearer token is not valid".into(),
                token_given: true,
            }),
        }
    }

    /// Allows the request when its token has at least role `need` (any token when `None`);
    /// 401 without a valid token, 403 with one whose role is too low.
    pub(crate) fn require(&self, req: &HttpRequest, need: AdminRole) -> Result<(), ApiError> {
        if self.is_empty() {
            return Ok(());
        }
        let (name, role) = self.identify(req)?;
        if role >= need {
            Ok(())
        } else {
            tracing::info!(token = name, role = role.as_str(), need = need.as_str(), path = %req.path(), "admin request refused: role too low");
            Err(ApiError::Forbidden {
                detail: format!(
                    "this operation needs the {} role; the token has the {} role",
                    need.as_str(),
                    role.as_str()
                ),
            })
        }
    }
}

/// Equal length and equal bytes, in time that depends only on the lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> Choice {
    let n = a.len().max(b.len());
    let mut pa = vec![0u8; n];
    let mut pb = vec![0u8; n];
    pa[..a.len()].copy_from_slice(a);
    pb[..b.len()].copy_from_slice(b);
    pa.ct_eq(&pb) & (a.len() as u64).ct_eq(&(b.len() as u64))
}

/// Parses `role token [name]` lines; `#` starts a comment.
fn parse_tokens_file(text: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(role), Some(token)) = (parts.next(), parts.next()) else {
            return Err(format!("line {}: expected `role token [name]`", n + 1));
        };
        let role = parse_role(role).ok_or_else(|| {
            format!(
                "line {}: unknown role {role:?}: use viewer, operator or admin",
                n + 1
            )
        })?;
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "line {}: the token is shorter than {MIN_TOKEN_LEN} characters",
                n + 1
            ));
        }
        let name = parts
            .next()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("tokens_file line {}", n + 1));
        out.push(Entry {
            name,
            role,
            token: token.as_bytes().to_vec(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare_is_exact() {
        assert!(bool::from(ct_eq(b"abcdefabcdefabcd", b"abcdefabcdefabcd")));
        assert!(!bool::from(ct_eq(b"abcdefabcdefabcd", b"abcdefabcdefabce")));
        assert!(!bool::from(ct_eq(b"abc", b"abc\0")));
        assert!(!bool::from(ct_eq(b"", b"x")));
    }

    #[test]
    fn token_file_lines() {
        let e = parse_tokens_file(
            "# comment\nviewer 0123456789abcdef ci\n\nadmin fedcba9876543210 # ops\n",
        )
        .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].role, e[0].name.as_str()), (AdminRole::Viewer, "ci"));
        assert_eq!(e[1].role, AdminRole::Admin);
        assert!(parse_tokens_file("root 0123456789abcdef").is_err());
        assert!(parse_tokens_file("viewer short").is_err());
        assert!(parse_tokens_file("viewer").is_err());
    }
}
