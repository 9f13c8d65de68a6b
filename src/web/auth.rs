//! Who may see what: sign-in tokens (configured as SHA-256 hashes), server-side sessions
//! behind an `HttpOnly; SameSite=Strict` cookie, and a per-session CSRF token for the calls
//! that change state.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::WebToken;
use crate::grid::GridMap;

pub const COOKIE: &str = "dissuade_session";

/// What a session may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The anti-fraud centre: everything.
    Centre,
    /// A station's duty desk: the station's cells and the escalations to its desk.
    Station(String),
    /// A community officer or grid worker: the tasks naming it.
    Officer(String),
}

impl Scope {
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Centre => "centre",
            Scope::Station(_) => "station",
            Scope::Officer(_) => "officer",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("web.tokens[{index}]: station `{id}` is not in the grid's stations file")]
    UnknownStation { index: usize, id: String },
    #[error("web.tokens[{index}]: officer `{id}` is not in the roster")]
    UnknownOfficer { index: usize, id: String },
}

/// The configured tokens, checked against the grid map.
#[derive(Debug, Clone)]
pub struct Tokens {
    entries: Vec<([u8; 32], Scope)>,
}

impl Tokens {
    /// Tokens whose scope names a station or officer the grid map does not know are refused,
    /// naming the entry.
    pub fn new(tokens: &[WebToken], grid: &GridMap) -> Result<Tokens, TokenError> {
        let mut entries = Vec::with_capacity(tokens.len());
        for (index, t) in tokens.iter().enumerate() {
            let id = t.id.clone().unwrap_or_default();
            let scope = match t.scope.as_str() {
                "centre" => Scope::Centre,
                "station" => {
                    if !grid.stations().iter().any(|s| s.station_id == id) {
                        return Err(TokenError::UnknownStation { index, id });
                    }
                    Scope::Station(id)
                }
                _ => {
                    let known = (0..grid.cells().len())
                        .any(|c| grid.roster(c).iter().any(|o| o.officer_id == id));
                    if !known {
                        return Err(TokenError::UnknownOfficer { index, id });
                    }
                    Scope::Officer(id)
                }
            };
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&t.sha256, &mut hash).expect("validated at load");
            entries.push((hash, scope));
        }
        Ok(Tokens { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The scope a token opens. Every entry is compared, in constant time, so the answer's
    /// timing does not tell how much of a hash matched.
    pub fn check(&self, token: &str) -> Option<Scope> {
        let hash = sha256(token);
        let mut found = None;
        for (h, scope) in &self.entries {
            let diff = h.iter().zip(&hash).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(scope.clone());
            }
        }
        found
    }
}

pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token (32 bytes, hex) and its hash, for `dissuade token` and the demo.
pub fn new_token() -> (String, String) {
    let token = random_hex();
    let hash = hex::encode(sha256(&token));
    (token, hash)
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

#[derive(Debug, Clone)]
pub struct Session {
    pub scope: Scope,
    pub csrf: String,
    expires: Instant,
}

/// Sessions in memory: a restart signs everyone out.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a session; returns its id (the cookie's value).
    pub fn open(&self, scope: Scope) -> String {
        let id = random_hex();
        let now = Instant::now();
        let mut map = self.by_id.lock().expect("sessions lock");
        map.retain(|_, s| s.expires > now);
        map.insert(
            id.clone(),
            Session {
                scope,
                csrf: random_hex(),
                expires: now + self.ttl,
            },
        );
        id
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        let map = self.by_id.lock().expect("sessions lock");
        map.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    pub fn close(&self, id: &str) {
        self.by_id.lock().expect("sessions lock").remove(id);
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// The session id in a `Cookie` header, if any.
pub fn session_cookie(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(list: &[(&str, Option<&str>, &str)]) -> Tokens {
        Tokens {
            entries: list
                .iter()
                .map(|(scope, id, token)| {
                    let scope = match *scope {
                        "centre" => Scope::Centre,
                        "station" => Scope::Station(id.unwrap().into()),
                        _ => Scope::Officer(id.unwrap().into()),
                    };
                    (sha256(token), scope)
                })
                .collect(),
        }
    }

    #[test]
    fn a_token_opens_its_scope_and_nothing_else_opens_anything() {
        let t = tokens(&[
            ("centre", None, "c-token"),
            ("station", Some("120101-01"), "s-token"),
            ("officer", Some("po-1"), "o-token"),
        ]);
        assert_eq!(t.check("c-token"), Some(Scope::Centre));
        assert_eq!(t.check("s-token"), Some(Scope::Station("120101-01".into())));
        assert_eq!(t.check("o-token"), Some(Scope::Officer("po-1".into())));
        for wrong in ["", "s-toke", "s-token ", "S-TOKEN", "c-token\n"] {
            assert_eq!(t.check(wrong), None, "{wrong:?}");
        }
    }

    #[test]
    fn new_tokens_differ_and_hash_to_what_the_config_stores() {
        let (a, ha) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(ha, hex::encode(sha256(&a)));
    }

    #[test]
    fn sessions_expire_and_close() {
        let s = Sessions::new(Duration::from_millis(50));
        let id = s.open(Scope::Centre);
        assert_eq!(s.get(&id).unwrap().scope, Scope::Centre);
        assert!(s.get("nope").is_none());
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.get(&id).is_none(), "expired");
        let id = Sessions::new(Duration::from_secs(60)).open(Scope::Centre);
        let s2 = Sessions::new(Duration::from_secs(60));
        let id2 = s2.open(Scope::Centre);
        s2.close(&id2);
        assert!(s2.get(&id2).is_none());
        assert_ne!(id, id2);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        assert_eq!(
            session_cookie("a=1; dissuade_session=abc; b=2"),
            Some("abc")
        );
        assert_eq!(session_cookie("dissuade_session=x"), Some("x"));
        assert_eq!(session_cookie("other=1"), None);
        assert_eq!(session_cookie("xdissuade_session=1"), None);
    }
}
