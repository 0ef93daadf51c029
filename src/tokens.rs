//! Bearer tokens for the HTTP door (and MCP over HTTP): a new token's secret, the hash the
//! state DB keeps of it, and the connection the tokens are kept through. Who may create,
//! list or revoke a token, and what a token lets its caller do, is decided in
//! `ops::tokens`.

use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::model::{ActionRecord, NewToken, Token};
use crate::store::{NewTokenRow, Store, StoreError};
use crate::sync::lock;

/// What every secret starts with, so a leaked one is recognised (secret scanners, logs).
pub const SECRET_PREFIX: &str = "drover_";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no random bytes for a token's secret: {0}")]
    Random(String),
}

/// The tokens in the state DB, through a connection of their own (a request's lookup
/// never waits on the engine's writes).
pub struct Tokens {
    store: Mutex<Store>,
}

impl Tokens {
    pub fn open(db: &Path) -> Result<Tokens, TokenError> {
        let store = Store::open(db)?.observe_writes(crate::selfmetrics::record_db_write);
        Ok(Tokens {
            store: Mutex::new(store),
        })
    }

    /// Stores `token` with a new secret, and `audit` beside it; `None` (nothing stored)
    /// when a token of that name is live.
    pub fn create(
        &self,
        token: Token,
        audit: &ActionRecord,
    ) -> Result<Option<NewToken>, TokenError> {
        let secret = new_secret()?;
        let row = NewTokenRow {
            token: &token,
            hash: &hash(&secret),
        };
        if !lock(&self.store).create_token(&row, audit)? {
            return Ok(None);
        }
        Ok(Some(NewToken {
            token: secret,
            record: token,
        }))
    }

    /// Every token, revoked ones included, newest first.
    pub fn list(&self) -> Result<Vec<Token>, TokenError> {
        Ok(lock(&self.store).tokens()?)
    }

    /// Revokes the live token `name`; `None` when there is none.
    pub fn revoke(
        &self,
        name: &str,
        by: &str,
        audit: &ActionRecord,
    ) -> Result<Option<Token>, TokenError> {
        Ok(lock(&self.store).revoke_token(name, by, audit)?)
    }

    /// The token `secret` is, whatever its state; `None` when it is no token's.
    pub fn find(&self, secret: &str) -> Result<Option<Token>, TokenError> {
        Ok(lock(&self.store).token_by_hash(&hash(secret))?)
    }
}

/// A new secret: the prefix and 32 bytes from the kernel's random source, in hex.
fn new_secret() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(format!("{SECRET_PREFIX}{}", hex(&bytes)))
}

/// What the state DB keeps of a secret: its SHA-256, in hex. The secrets are random and
/// long, so a fast hash is enough: no dictionary reaches them.
fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;

    fn token(name: &str) -> Token {
        Token {
            name: name.to_owned(),
            uid: 1000,
            user: "alice".to_owned(),
            role: "operator".to_owned(),
            created_by: "uid 0 (root) via dbus".to_owned(),
            created_at: Timestamp::now(),
            expires_at: None,
            revoked_at: None,
            revoked_by: None,
        }
    }

    fn audit() -> ActionRecord {
        ActionRecord {
            id: 0,
            run: String::new(),
            action: "token-create".to_owned(),
            requested_by: "test".to_owned(),
            uid: None,
            role: None,
            channel: "dbus".to_owned(),
            at: Timestamp::now(),
            result: "done".to_owned(),
            checkpoint: None,
            detail: String::new(),
            took_ms: 0,
        }
    }

    #[test]
    fn a_secret_is_found_by_its_hash_shown_once_and_a_name_is_one_live_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(&dir.path().join("state.db")).unwrap();
        let created = tokens.create(token("ci"), &audit()).unwrap().unwrap();
        assert!(created.token.starts_with(SECRET_PREFIX));
        assert_eq!(created.token.len(), SECRET_PREFIX.len() + 64);
        assert_eq!(
            tokens.find(&created.token).unwrap(),
            Some(token_named(&tokens, "ci"))
        );
        assert_eq!(tokens.find("drover_0000").unwrap(), None);
        // The DB holds the hash, not the secret.
        let db = std::fs::read(dir.path().join("state.db-wal")).unwrap_or_default();
        let db = [db, std::fs::read(dir.path().join("state.db")).unwrap()].concat();
        assert!(
            !db.windows(created.token.len())
                .any(|w| w == created.token.as_bytes())
        );
        // One live token per name; a revoked one frees it.
        assert!(tokens.create(token("ci"), &audit()).unwrap().is_none());
        let revoked = tokens.revoke("ci", "root", &audit()).unwrap().unwrap();
        assert_eq!(revoked.revoked_by.as_deref(), Some("root"));
        assert_eq!(revoked.unusable(Timestamp::now()), Some("revoked"));
        assert!(tokens.revoke("ci", "root", &audit()).unwrap().is_none());
        let again = tokens.create(token("ci"), &audit()).unwrap().unwrap();
        assert_ne!(again.token, created.token);
        assert_eq!(tokens.list().unwrap().len(), 2);
    }

    fn token_named(tokens: &Tokens, name: &str) -> Token {
        tokens
            .list()
            .unwrap()
            .into_iter()
            .find(|t| t.name == name)
            .unwrap()
    }

    #[test]
    fn an_expired_token_is_unusable() {
        let mut t = token("old");
        assert_eq!(t.unusable(Timestamp::now()), None);
        t.expires_at = Some(Timestamp(Timestamp::now().0 - 1));
        assert_eq!(t.unusable(Timestamp::now()), Some("expired"));
    }
}
