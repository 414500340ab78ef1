//! The approvals pane of `coord top` (PROTOCOL §14): what waits for a
//! decision, oldest first, and a key per decision — `a` allow, `d` deny
//! (with a reason typed in), `x` ask the agent's terminal.
//!
//! Pure like the rest of the view: a key queues a decision on the model
//! ([`Model::decisions`]); the caller sends it with the admin token and
//! says how it went ([`Model::notice`]).

use super::model::{Key, Model, Outcome};
use super::render::age;
use coord_proto::api::Verdict;
use coord_proto::approval::Approval;
use coord_proto::Timestamp;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use ratatui::Frame;

/// A decision made in the pane, for the caller to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The approval.
    pub approval_id: String,
    /// Allow, deny or ask.
    pub verdict: Verdict,
    /// Why (a deny's reason reaches the model).
    pub reason: String,
}

/// Pending approvals, oldest first.
pub fn pending(m: &Model) -> Vec<&Approval> {
    let mut out: Vec<&Approval> = m.state.view.approvals.values().collect();
    out.sort_by_key(|a| a.requested_seq);
    out
}

/// A key in the approvals pane; `None` when the pane does not take it.
pub fn key(m: &mut Model, k: Key) -> Option<Outcome> {
    if let Some(text) = m.reason.as_mut() {
        match k {
            Key::Enter => {
                let reason = std::mem::take(text);
                m.reason = None;
                decide(m, Verdict::Deny, reason);
            }
            Key::Esc => m.reason = None,
            Key::Backspace => {
                text.pop();
            }
            Key::Char(c) => text.push(c),
            _ => return Some(Outcome::Same),
        }
        return Some(Outcome::Redraw);
    }
    let n = m.state.view.approvals.len();
    match k {
        Key::Up | Key::Char('k') => m.approval_selected = m.approval_selected.saturating_sub(1),
        Key::Down | Key::Char('j') => {
            m.approval_selected = (m.approval_selected + 1).min(n.saturating_sub(1));
        }
        Key::Char('a') => decide(m, Verdict::Allow, String::new()),
        Key::Char('x') => decide(m, Verdict::Ask, String::new()),
        Key::Char('d') if n > 0 => m.reason = Some(String::new()),
        _ => return None,
    }
    Some(Outcome::Redraw)
}

fn decide(m: &mut Model, verdict: Verdict, reason: String) {
    let Some(id) = pending(m)
        .get(m.approval_selected)
        .map(|a| a.approval_id.clone())
    else {
        return;
    };
    m.decisions.push(Decision {
        approval_id: id,
        verdict,
        reason,
    });
}

/// The pane: the queue, and a line for the reason being typed or the
/// last decision's fate.
pub fn draw(f: &mut Frame, area: Rect, m: &Model, now: Timestamp) {
    let [table, line] = Layout::vertical([Constraint::Min(2), Constraint::Length(1)]).areas(area);
    let rows: Vec<Row> = pending(m)
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let style = if i == m.approval_selected {
                Style::default().add_modifier(Modifier::REVERSED)
            } else {
                Style::default()
            };
            Row::new(vec![
                a.approval_id.clone(),
                a.session_id.clone(),
                a.summary.clone(),
                age((now.as_millis() - a.requested_at.as_millis()).max(0) as u64),
            ])
            .style(style)
        })
        .collect();
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(20),
                Constraint::Min(12),
                Constraint::Min(20),
                Constraint::Length(8),
            ],
        )
        .header(
            Row::new(["APPROVAL", "SESSION", "ASKS TO RUN", "WAITING"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(
            Block::default()
                .borders(Borders::TOP)
                .title("Approvals: a allow · d deny · x ask the terminal"),
        ),
        table,
    );
    let text = match (&m.reason, &m.notice) {
        (Some(r), _) => format!("deny, because: {r}_   Enter send · Esc cancel"),
        (None, Some(n)) => n.clone(),
        (None, None) => String::new(),
    };
    f.render_widget(Paragraph::new(text), line);
}
