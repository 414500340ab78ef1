//! The MCP tools of a coordinating agent over its children's permission
//! prompts (PROTOCOL §14): list what they wait for, and decide. The daemon
//! lets a session decide for its own descendants only (`not_child`
//! otherwise); this module adds no rule of its own.

use super::mcp::{reply, CoordMcp};
use coord_proto::api::{DecideRequest, Verdict};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{schemars, tool, tool_router, ErrorData};
use serde::Deserialize;

/// What a coordinator may decide.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum DecideAs {
    /// The child runs the tool.
    Allow,
    /// It does not; its model reads the reason.
    Deny,
    /// Its own terminal decides.
    Ask,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(super) struct DecideArgs {
    /// The approval id (`ap-…`), from `approvals`.
    approval_id: String,
    /// `allow`, `deny`, or `ask` (leave it to the child's own terminal).
    decision: DecideAs,
    /// Why; a deny's reason is what the child's model reads.
    #[serde(default)]
    reason: String,
}

#[tool_router(router = approvals_router, vis = "pub(super)")]
impl CoordMcp {
    #[tool(
        description = "List the permission prompts your child sessions (and theirs) wait on: each approval's id, the child, the tool and what it would do."
    )]
    async fn approvals(&self) -> Result<CallToolResult, ErrorData> {
        let me = self.session.clone();
        let answer = async {
            let sessions = self.client.sessions().await?.sessions;
            let parent_of = |id: &str| {
                sessions
                    .iter()
                    .find(|s| s.session_id == id)
                    .and_then(|s| s.parent_session.clone())
            };
            let below_me = |id: &str| {
                let mut at = parent_of(id);
                for _ in 0..16 {
                    match at {
                        Some(p) if p == me => return true,
                        Some(p) => at = parent_of(&p),
                        None => return false,
                    }
                }
                false
            };
            let mut all = self.client.approvals("pending", None).await?;
            all.approvals.retain(|a| below_me(&a.session_id));
            Ok(all)
        }
        .await;
        reply(answer, |r| {
            if r.approvals.is_empty() {
                "None of your children waits for a permission.".to_string()
            } else {
                r.approvals
                    .iter()
                    .map(|a| format!("{} from {}: {}", a.approval_id, a.session_id, a.summary))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        })
    }

    #[tool(
        description = "Decide a permission prompt of one of your child sessions: allow, deny (with the reason its model reads), or ask (its own terminal decides)."
    )]
    async fn approval_decide(
        &self,
        Parameters(a): Parameters<DecideArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let req = DecideRequest {
            decision: match a.decision {
                DecideAs::Allow => Verdict::Allow,
                DecideAs::Deny => Verdict::Deny,
                DecideAs::Ask => Verdict::Ask,
            },
            reason: a.reason,
            by: None,
            session_id: Some(self.session.clone()),
            tx_id: None,
        };
        reply(
            self.client.decide_approval(&a.approval_id, &req).await,
            |x| {
                format!(
                    "{} {} ({} of {}).",
                    x.decision.as_ref().map_or("?", |d| d.decision.as_str()),
                    x.approval_id,
                    x.summary,
                    x.session_id
                )
            },
        )
    }
}
