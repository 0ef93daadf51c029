//! Bearer tokens: created, listed, looked up by the hash of their secret, revoked. Each
//! creation and revocation is recorded with its audit record in one transaction.

use rusqlite::{OptionalExtension, Transaction, params};

use super::checkpoints::insert_action;
use super::{Result, Store, StoreReader};
use crate::model::{ActionRecord, Timestamp, Token};

/// A token to store: its record and the hash of its secret.
pub struct NewTokenRow<'a> {
    pub token: &'a Token,
    pub hash: &'a str,
}

macro_rules! token_columns {
    () => {
        "name, uid, user, role, created_by, created_at, expires_at, revoked_at, revoked_by"
    };
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Token> {
    Ok(Token {
        name: r.get(0)?,
        uid: r.get(1)?,
        user: r.get(2)?,
        role: r.get(3)?,
        created_by: r.get(4)?,
        created_at: Timestamp(r.get(5)?),
        expires_at: r.get::<_, Option<i64>>(6)?.map(Timestamp),
        revoked_at: r.get::<_, Option<i64>>(7)?.map(Timestamp),
        revoked_by: r.get(8)?,
    })
}

impl Store {
    /// Stores a new token and its audit record; `false` (nothing stored) when a token of
    /// that name is not revoked.
    pub fn create_token(&mut self, new: &NewTokenRow<'_>, audit: &ActionRecord) -> Result<bool> {
        let tx = self.write()?;
        let t = new.token;
        let inserted = tx.execute(
            "INSERT INTO tokens (name, hash, uid, user, role, created_by, created_at, expires_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
             WHERE NOT EXISTS (SELECT 1 FROM tokens WHERE name = ?1 AND revoked_at IS NULL)",
            params![
                t.name,
                new.hash,
                t.uid,
                t.user,
                t.role,
                t.created_by,
                t.created_at.0,
                t.expires_at.map(|at| at.0)
            ],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        insert_action(&tx, audit)?;
        tx.commit()?;
        Ok(true)
    }

    /// Revokes the live token `name` and records `audit`; the token as it is now, or
    /// `None` (nothing changed) when no live token has that name.
    pub fn revoke_token(
        &mut self,
        name: &str,
        by: &str,
        audit: &ActionRecord,
    ) -> Result<Option<Token>> {
        let tx = self.write()?;
        let changed = tx.execute(
            "UPDATE tokens SET revoked_at = ?2, revoked_by = ?3 WHERE name = ?1 AND revoked_at IS NULL",
            params![name, Timestamp::now().0, by],
        )?;
        if changed == 0 {
            return Ok(None);
        }
        insert_action(&tx, audit)?;
        let token = latest_named(&tx, name)?;
        tx.commit()?;
        Ok(token)
    }
}

fn latest_named(tx: &Transaction<'_>, name: &str) -> Result<Option<Token>> {
    Ok(tx
        .query_row(
            concat!(
                "SELECT ",
                token_columns!(),
                " FROM tokens WHERE name = ?1 ORDER BY id DESC LIMIT 1"
            ),
            [name],
            token_row,
        )
        .optional()?)
}

impl StoreReader {
    /// Every token, revoked ones included, newest first.
    pub fn tokens(&self) -> Result<Vec<Token>> {
        self.query_all(
            concat!("SELECT ", token_columns!(), " FROM tokens ORDER BY id DESC"),
            [],
            token_row,
        )
    }

    /// The token whose secret hashes to `hash`, whatever its state.
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<Token>> {
        Ok(self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                token_columns!(),
                " FROM tokens WHERE hash = ?1"
            ))?
            .query_row([hash], token_row)
            .optional()?)
    }
}
