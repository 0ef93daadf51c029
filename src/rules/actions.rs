//! Carrying out what rules ask for, as the `rules` principal: with the role the config
//! gives it, through the same engine calls as an operator's request, and audited like one
//! (`requested_by` "rules (<rule>)", channel "rules"). Refusals are audited too.

use crate::api::auth::{Denied, Role};
use crate::engine::{ActionRequest, Engine, EngineError, KillRequest};
use crate::model::{ActionRecord, CheckpointRecord, KillRecord};

use super::{ActionKind, RuleAction};

/// The channel rule actions are audited with.
pub const CHANNEL: &str = "rules";

/// The role each action needs: the same as an operator's request of it.
pub fn needed_role(kind: &ActionKind) -> Role {
    match kind {
        ActionKind::Kill { .. } | ActionKind::Restart | ActionKind::Checkpoint { .. } => {
            Role::Operator
        }
    }
}

/// Who the audit trail says asked.
pub fn principal(rule: &str) -> String {
    format!("rules ({rule})")
}

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What an action did.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionOutcome {
    Killed(KillRecord),
    Restarted(ActionRecord),
    Checkpointed(CheckpointRecord),
}

/// Carries out `action` with `role` (the config's `[rules] role`). A role too low for it
/// is refused, and the refusal audited, as an operator's would be.
pub async fn execute(
    engine: &Engine,
    role: Role,
    action: &RuleAction,
) -> Result<ActionOutcome, ActionError> {
    let requested_by = principal(&action.rule);
    let needed = needed_role(&action.kind);
    let denied = (role < needed).then(|| Denied {
        caller: requested_by.clone(),
        action: action.kind.name(),
        needed,
        held: Some(role),
    });
    match &action.kind {
        ActionKind::Kill { reason } => {
            let request = KillRequest {
                run: action.run.clone(),
                reason: format!("rule {}: {reason}", action.rule),
                requested_by,
                uid: None,
                role: Some(role.to_string()),
                channel: CHANNEL.to_owned(),
                grace: None,
                // A rule cannot confirm: a protected workflow's kill is refused (and
                // audited) by the engine, and left to a person.
                confirm: false,
            };
            if let Some(denied) = denied {
                engine.refuse_kill(&request, &denied.to_string())?;
                return Err(denied.into());
            }
            Ok(ActionOutcome::Killed(engine.kill(request).await?))
        }
        ActionKind::Restart | ActionKind::Checkpoint { .. } => {
            let request = ActionRequest {
                run: action.run.clone(),
                requested_by,
                uid: None,
                role: Some(role.to_string()),
                channel: CHANNEL.to_owned(),
                confirm: false,
            };
            if let Some(denied) = denied {
                engine.refuse_action(&request, action.kind.name(), &denied.to_string())?;
                return Err(denied.into());
            }
            match &action.kind {
                ActionKind::Checkpoint { label } => {
                    let label = (!label.is_empty()).then_some(label.as_str());
                    Ok(ActionOutcome::Checkpointed(
                        engine.checkpoint(&request, label).await?,
                    ))
                }
                _ => Ok(ActionOutcome::Restarted(
                    engine.restart(&request, None).await?,
                )),
            }
        }
    }
}
