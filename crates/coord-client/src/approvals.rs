//! The approvals endpoints (PROTOCOL §14) as client methods.

use super::*;
use coord_proto::approval::Approval;

impl Client {
    /// `POST /v1/approvals` (the asking session's token): asks; the answer
    /// is decided at once when a policy rule matched, and is the existing
    /// approval for a duplicate.
    ///
    /// # Errors
    /// See [`ClientError`]; `session_not_found`, `message_too_large` (an
    /// input over 256 KiB).
    pub async fn ask_approval(&self, req: &ApprovalAsk) -> Result<Answer<Approval>> {
        self.post("/v1/approvals", req).await
    }

    /// `GET /v1/approvals?state=…&session=…`: `pending`, `decided` or
    /// `all`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn approvals(&self, state: &str, session: Option<&str>) -> Result<ApprovalsResponse> {
        let mut pairs = vec![("state", state)];
        if let Some(s) = session {
            pairs.push(("session", s));
        }
        self.get(&format!("/v1/approvals?{}", query(&pairs)?)).await
    }

    /// `GET /v1/approvals/{id}`: with the tool's full input.
    ///
    /// # Errors
    /// See [`ClientError`]; `approval_not_found`.
    pub async fn approval(&self, id: &str) -> Result<Approval> {
        self.get(&format!("/v1/approvals/{}", enc(id))).await
    }

    /// `GET /v1/approvals/{id}/wait?wait_ms=N`: the approval once decided.
    /// With `requester` (the asking session; this client carries its
    /// token) it is the requester's wait: dropping this future before it
    /// answers closes the connection, and the daemon withdraws the
    /// approval (PROTOCOL §14).
    ///
    /// # Errors
    /// See [`ClientError`]; `timeout` (still pending after `wait_ms`),
    /// `approval_not_found`, `not_owner`.
    pub async fn wait_approval(
        &self,
        id: &str,
        wait_ms: u64,
        requester: Option<&str>,
    ) -> Result<Approval> {
        let mut path = format!("/v1/approvals/{}/wait?wait_ms={wait_ms}", enc(id));
        if let Some(s) = requester {
            path.push_str(&format!("&session_id={}", enc(s)));
        }
        self.get(&path).await
    }

    /// `POST /v1/approvals/{id}/decide`: the admin token, or a session's
    /// token for its descendants' approvals (`session_id`).
    ///
    /// # Errors
    /// See [`ClientError`]; `approval_decided` (someone was first),
    /// `approval_not_found`, `not_child`, `admin_required`.
    pub async fn decide_approval(&self, id: &str, req: &DecideRequest) -> Result<Approval> {
        Ok(self
            .post(&format!("/v1/approvals/{}/decide", enc(id)), req)
            .await?
            .body)
    }

    /// `POST /v1/approvals/{id}/withdraw` (the asking session's token).
    ///
    /// # Errors
    /// See [`ClientError`]; `approval_decided`, `not_owner`.
    pub async fn withdraw_approval(&self, id: &str, req: &WithdrawRequest) -> Result<Approval> {
        Ok(self
            .post(&format!("/v1/approvals/{}/withdraw", enc(id)), req)
            .await?
            .body)
    }

    /// `POST /v1/ui/login?role=approver&name=N` (admin token): a one-time
    /// dashboard link for a login that may also decide approvals.
    ///
    /// # Errors
    /// See [`ClientError`]; `not_found` when the daemon serves no
    /// dashboard.
    pub async fn ui_login_as(
        &self,
        role: &str,
        name: Option<&str>,
    ) -> Result<coord_proto::api::UiLoginResponse> {
        let mut pairs = vec![("role", role)];
        if let Some(n) = name {
            pairs.push(("name", n));
        }
        Ok(self
            .post(
                &format!("/v1/ui/login?{}", query(&pairs)?),
                &serde_json::json!({}),
            )
            .await?
            .body)
    }
}
