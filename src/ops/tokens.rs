//! Bearer tokens (`CreateToken`, `Tokens`, `RevokeToken`), and the check every token door
//! makes of one (`authenticate`). A user may make tokens for themselves with at most their
//! own role; a token for someone else takes an admin. A token's caller acts as its user
//! (its runs run as that user) with the token's role, capped by what `[auth]` gives that
//! user at the time of each request. Creations and revocations are audited (actions
//! `token-create`, `token-revoke`), refusals included.

use super::refusals::Audited;
use super::types::{TokenArgs, check_token_name, limits};
use super::{Caller, Channel, Ops, OpsError, Result};
use crate::auth::Role;
use crate::credentials::Account;
use crate::model::{ActionRecord, NewToken, Timestamp, Token};

impl Ops {
    /// Creates a token; its secret is in the reply and nowhere else.
    pub fn create_token(&self, caller: &Caller, args: TokenArgs) -> Result<NewToken> {
        let input = args.check();
        let for_other = args.user.as_deref().is_some_and(|user| {
            caller
                .uid()
                .is_none_or(|uid| user != uid.to_string() && Some(user) != caller.user_name())
        });
        let (needed, asks) = if for_other {
            (
                args.role.max(Role::Admin),
                "create a token for another user",
            )
        } else {
            (args.role, "create a token with this role")
        };
        let audited = Audited {
            action: "token-create",
            run: "",
            about: &args.name,
        };
        self.admit_action(caller, needed, asks, audited, input)?;
        let account = match (&args.user, caller.uid()) {
            (Some(user), _) => account_named(user)?,
            (None, Some(uid)) => Account::of_uid(uid).map_err(|e| invalid(e.to_string()))?,
            (None, None) => {
                return Err(invalid(format!(
                    "{caller} is no user: name the token's user"
                )));
            }
        };
        let now = Timestamp::now();
        let token = Token {
            name: args.name.clone(),
            uid: account.uid,
            user: account.name.clone(),
            role: args.role.to_string(),
            created_by: caller.to_string(),
            created_at: now,
            expires_at: args.expires.map(|d| now.plus(d)),
            revoked_at: None,
            revoked_by: None,
        };
        let audit = ActionRecord {
            detail: format!(
                "token {} for {} ({}){}",
                token.name,
                account.describe(),
                token.role,
                args.expires.map_or(String::new(), |d| format!(
                    ", expires in {}",
                    humantime::format_duration(d)
                ))
            ),
            ..ActionRecord::new(&caller.requester(), "", "token-create")
        };
        let created = self.tokens.create(token, &audit)?.ok_or_else(|| {
            OpsError::InvalidState(format!(
                "a token named {} exists: revoke it first, or choose another name",
                args.name
            ))
        })?;
        tracing::info!(drover_event = "token-create", "{}", audit.detail);
        Ok(created)
    }

    /// The tokens: every one for an admin, the caller's own for anyone else.
    pub fn tokens(&self, caller: &Caller) -> Result<Vec<Token>> {
        self.authorise(caller, Role::Viewer, "list tokens")?;
        let all = self.tokens.list()?;
        if caller.role >= Some(Role::Admin) {
            return Ok(all);
        }
        Ok(all
            .into_iter()
            .filter(|t| Some(t.uid) == caller.uid())
            .collect())
    }

    /// Revokes the live token `name`: the token's user may, and an admin.
    pub fn revoke_token(&self, caller: &Caller, name: &str) -> Result<Token> {
        let input = check_token_name(name);
        let audited = Audited {
            action: "token-revoke",
            run: "",
            about: name,
        };
        self.admit_action(caller, Role::Viewer, "revoke a token", audited, input)?;
        let live = self
            .tokens
            .list()?
            .into_iter()
            .find(|t| t.name == name && t.revoked_at.is_none());
        let Some(live) = live else {
            return Err(OpsError::NoSuchToken(format!("no live token named {name}")));
        };
        if Some(live.uid) != caller.uid() {
            self.admit_action(
                caller,
                Role::Admin,
                "revoke another user's token",
                audited,
                Ok(()),
            )?;
        }
        let audit = ActionRecord {
            detail: format!("token {name} of {} (uid {})", live.user, live.uid),
            ..ActionRecord::new(&caller.requester(), "", "token-revoke")
        };
        let revoked = self
            .tokens
            .revoke(name, &caller.to_string(), &audit)?
            .ok_or_else(|| OpsError::NoSuchToken(format!("no live token named {name}")))?;
        tracing::info!(drover_event = "token-revoke", "{}", audit.detail);
        Ok(revoked)
    }

    /// The caller a bearer token stands for, at a door of `channel`. Every way it can fail
    /// says only that the token admits nobody, and why, never whose it was.
    pub fn authenticate(&self, secret: &str, channel: Channel) -> Result<Caller> {
        if secret.is_empty() || secret.len() > limits::TOKEN_SECRET {
            return Err(OpsError::Unauthenticated("no valid bearer token".into()));
        }
        let token = self
            .tokens
            .find(secret)?
            .ok_or_else(|| OpsError::Unauthenticated("unknown token".into()))?;
        if let Some(why) = token.unusable(Timestamp::now()) {
            return Err(OpsError::Unauthenticated(format!("the token is {why}")));
        }
        let role = token
            .role
            .parse::<Role>()
            .map_err(|e| OpsError::Unauthenticated(format!("the token's role: {e}")))?;
        Ok(Caller::token(&token, role, channel, &self.auth))
    }
}

/// A user named by name or uid.
fn account_named(user: &str) -> Result<Account> {
    match user.parse::<u32>() {
        Ok(uid) => Account::of_uid(uid),
        Err(_) => Account::of_name(user),
    }
    .map_err(|e| invalid(e.to_string()))
}

fn invalid(reason: String) -> OpsError {
    OpsError::Input(super::InputError::Invalid {
        field: "the token's user",
        reason,
    })
}
